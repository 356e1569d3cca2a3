//! Bulk reads with `COPY (...) TO STDOUT (FORMAT binary)`, parsed as the bytes arrive.
//!
//! A million-item version has 60 million neighbour rows. Fetched as query rows, each one cost
//! a row object, column metadata checks and per-value decoding: about a microsecond of the
//! loader's time, an order of magnitude more than Postgres needed to produce it. The binary
//! copy stream is a flat sequence of length-prefixed fields, read here in place (only a row
//! split between two messages is copied).

use futures_util::TryStreamExt;
use sqlx::PgConnection;

/// The signature that opens every binary copy stream.
const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Runs `statement` (a `COPY (...) TO STDOUT (FORMAT binary)` whose rows have `N` columns)
/// and calls `row` with each row's fields (`None` for NULL), in the order Postgres sends
/// them. Stops at the first error `row` returns.
pub async fn for_each_row<const N: usize, E: From<sqlx::Error>>(
    connection: &mut PgConnection,
    statement: &str,
    mut row: impl FnMut([Option<&[u8]>; N]) -> Result<(), E>,
) -> Result<(), E> {
    let mut stream = connection.copy_out_raw(statement).await?;
    let mut parser = Parser::<N>::default();
    // Bytes of a row split across messages wait here for the rest.
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = stream.try_next().await? {
        // A load runs beside the requests it must not starve: buffered messages come back
        // without waiting, so give the worker up whenever this task's budget is spent.
        tokio::task::consume_budget().await;
        if pending.is_empty() {
            let used = parser.parse(&chunk, &mut row)?;
            pending.extend_from_slice(&chunk[used..]);
        } else {
            pending.extend_from_slice(&chunk);
            let used = parser.parse(&pending, &mut row)?;
            pending.drain(..used);
        }
    }
    if !parser.finished {
        return Err(protocol("the copy stream ended before its trailer").into());
    }
    if !pending.is_empty() {
        return Err(protocol("data after the trailer").into());
    }
    Ok(())
}

fn protocol(message: &str) -> sqlx::Error {
    sqlx::Error::Protocol(format!("binary COPY: {message}"))
}

/// Where the parse of a binary copy stream is.
#[derive(Default)]
struct Parser<const N: usize> {
    header_read: bool,
    finished: bool,
}

impl<const N: usize> Parser<N> {
    /// Parses the complete rows at the start of `data`, calling `row` for each, and returns
    /// how many bytes it used (the rest is an incomplete row).
    fn parse<E: From<sqlx::Error>>(
        &mut self,
        data: &[u8],
        row: &mut impl FnMut([Option<&[u8]>; N]) -> Result<(), E>,
    ) -> Result<usize, E> {
        let mut at = 0;
        if !self.header_read {
            // Signature, flags, then a header extension of the given length.
            let Some(fixed) = data.get(..SIGNATURE.len() + 8) else {
                return Ok(0);
            };
            if &fixed[..SIGNATURE.len()] != SIGNATURE {
                return Err(protocol("missing signature").into());
            }
            // Bits 0-15 of the flags are critical (bit 16 would add an OID to every row): a
            // stream with any of them set is not one this parser can read.
            let flags = be_i32(&fixed[SIGNATURE.len()..]);
            if flags & 0x0001_ffff != 0 {
                return Err(protocol("unsupported header flags").into());
            }
            let extension = usize::try_from(be_i32(&fixed[SIGNATURE.len() + 4..]))
                .map_err(|_| protocol("negative header extension length"))?;
            let header = fixed.len().saturating_add(extension);
            if data.len() < header {
                return Ok(0);
            }
            self.header_read = true;
            at = header;
        }
        while !self.finished {
            let Some(count) = data.get(at..at.saturating_add(2)) else {
                break;
            };
            let count = i16::from_be_bytes([count[0], count[1]]);
            if count == -1 {
                self.finished = true;
                at += 2;
                break;
            }
            if count as usize != N {
                return Err(protocol(&format!("a row has {count} fields, expected {N}")).into());
            }
            let mut fields: [Option<&[u8]>; N] = [None; N];
            let mut cursor = at + 2;
            let mut complete = true;
            for field in &mut fields {
                let Some(length) = data.get(cursor..cursor.saturating_add(4)) else {
                    complete = false;
                    break;
                };
                let length = be_i32(length);
                cursor += 4;
                if length == -1 {
                    continue;
                }
                let length = usize::try_from(length)
                    .map_err(|_| protocol(&format!("a field has length {length}")))?;
                let Some(value) = data.get(cursor..cursor.saturating_add(length)) else {
                    complete = false;
                    break;
                };
                *field = Some(value);
                cursor += length;
            }
            if !complete {
                break;
            }
            row(fields)?;
            at = cursor;
        }
        Ok(at)
    }
}

fn be_i32(bytes: &[u8]) -> i32 {
    i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// A `text` field.
pub fn text(field: Option<&[u8]>) -> Result<&str, sqlx::Error> {
    let bytes = field.ok_or_else(|| protocol("a text field is NULL"))?;
    std::str::from_utf8(bytes).map_err(|_| protocol("a text field is not UTF-8"))
}

/// A `real` field.
pub fn real(field: Option<&[u8]>) -> Result<f32, sqlx::Error> {
    match field {
        Some(&[a, b, c, d]) => Ok(f32::from_be_bytes([a, b, c, d])),
        Some(_) => Err(protocol("a real field is not 4 bytes")),
        None => Err(protocol("a real field is NULL")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A binary copy stream of `rows` of (text, real) with a header extension.
    fn stream(rows: &[(&str, Option<f32>)]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&0i32.to_be_bytes());
        out.extend_from_slice(&3i32.to_be_bytes());
        out.extend_from_slice(b"ext");
        for (text, real) in rows {
            out.extend_from_slice(&2i16.to_be_bytes());
            out.extend_from_slice(&(text.len() as i32).to_be_bytes());
            out.extend_from_slice(text.as_bytes());
            match real {
                Some(v) => {
                    out.extend_from_slice(&4i32.to_be_bytes());
                    out.extend_from_slice(&v.to_be_bytes());
                }
                None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    /// Parses `data` fed in pieces cut at `cuts`, as `for_each_row` does.
    fn parse_in_pieces(data: &[u8], cuts: &[usize]) -> (Vec<(String, Option<f32>)>, bool) {
        let mut parser = Parser::<2>::default();
        let mut rows = Vec::new();
        let mut record = |fields: [Option<&[u8]>; 2]| -> Result<(), sqlx::Error> {
            rows.push((
                text(fields[0])?.to_string(),
                fields[1].map(|f| real(Some(f))).transpose()?,
            ));
            Ok(())
        };
        let mut pending = Vec::new();
        let mut start = 0;
        for &cut in cuts.iter().chain(&[data.len()]) {
            let cut = cut.clamp(start, data.len());
            pending.extend_from_slice(&data[start..cut]);
            let used = parser.parse(&pending, &mut record).unwrap();
            pending.drain(..used);
            start = cut;
        }
        assert!(pending.is_empty());
        (rows, parser.finished)
    }

    #[test]
    fn rows_split_anywhere_between_messages_parse_the_same() {
        let rows = [
            ("a", Some(1.5)),
            ("", None),
            ("héllo", Some(-2.0)),
            ("z", Some(0.25)),
        ];
        let data = stream(&rows);
        let want: Vec<(String, Option<f32>)> =
            rows.iter().map(|(t, r)| (t.to_string(), *r)).collect();
        for cut in 0..=data.len() {
            for second in cut..=data.len() {
                let (got, finished) = parse_in_pieces(&data, &[cut, second]);
                assert_eq!(got, want, "cut at {cut} and {second}");
                assert!(finished);
            }
        }
    }

    #[test]
    fn a_wrong_signature_or_field_count_is_an_error() {
        let mut bad = stream(&[("a", Some(1.0))]);
        bad[0] = b'X';
        let mut parser = Parser::<2>::default();
        let mut ignore = |_: [Option<&[u8]>; 2]| -> Result<(), sqlx::Error> { Ok(()) };
        assert!(parser.parse(&bad, &mut ignore).is_err());
        let data = stream(&[("a", Some(1.0))]);
        let mut three = Parser::<3>::default();
        let mut ignore3 = |_: [Option<&[u8]>; 3]| -> Result<(), sqlx::Error> { Ok(()) };
        assert!(three.parse(&data, &mut ignore3).is_err());
    }

    #[test]
    fn negative_lengths_other_than_null_and_unknown_flags_are_errors() {
        let mut ignore = |_: [Option<&[u8]>; 2]| -> Result<(), sqlx::Error> { Ok(()) };
        let mut data = stream(&[("a", Some(1.0))]);
        // The first field's length follows the header (19 bytes + 3 of extension) and the
        // field count.
        data[24..28].copy_from_slice(&(-2i32).to_be_bytes());
        assert!(Parser::<2>::default().parse(&data, &mut ignore).is_err());
        let mut oids = stream(&[("a", Some(1.0))]);
        oids[11..15].copy_from_slice(&(1i32 << 16).to_be_bytes());
        assert!(Parser::<2>::default().parse(&oids, &mut ignore).is_err());
    }

    #[test]
    fn fields_decode_or_say_what_is_wrong() {
        assert_eq!(real(Some(&1.25f32.to_be_bytes())).unwrap(), 1.25);
        assert!(real(Some(&[0, 1])).is_err());
        assert!(real(None).is_err());
        assert_eq!(text(Some(b"abc")).unwrap(), "abc");
        assert!(text(Some(&[0xff])).is_err());
        assert!(text(None).is_err());
    }
}
