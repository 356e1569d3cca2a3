//! Bulk writes with `COPY ... FROM STDIN` in text format, sent in large chunks.

use std::ops::{Deref, DerefMut};

use sqlx::postgres::PgCopyIn;
use sqlx::PgConnection;

/// Bytes gathered before they are sent.
pub(super) const CHUNK_BYTES: usize = 1 << 20;

/// Rows encoded in COPY's text format, gathered in a byte buffer (for a thread that has no
/// connection; [`CopyRows`] sends them as they grow).
#[derive(Debug)]
pub struct CopyText {
    buffer: Vec<u8>,
    at_row_start: bool,
}

impl Default for CopyText {
    fn default() -> Self {
        Self::new()
    }
}

impl CopyText {
    /// An empty buffer with room for a chunk.
    pub fn new() -> Self {
        Self {
            buffer: Vec::with_capacity(CHUNK_BYTES + 4096),
            at_row_start: true,
        }
    }

    fn separator(&mut self) {
        if !self.at_row_start {
            self.buffer.push(b'\t');
        }
        self.at_row_start = false;
    }

    /// Appends a text field, escaped for COPY.
    pub fn text(&mut self, value: &str) -> &mut Self {
        self.separator();
        for &b in value.as_bytes() {
            match b {
                b'\\' => self.buffer.extend_from_slice(b"\\\\"),
                b'\t' => self.buffer.extend_from_slice(b"\\t"),
                b'\n' => self.buffer.extend_from_slice(b"\\n"),
                b'\r' => self.buffer.extend_from_slice(b"\\r"),
                _ => self.buffer.push(b),
            }
        }
        self
    }

    /// Appends a text field or NULL.
    pub fn opt_text(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => self.text(v),
            None => self.null(),
        }
    }

    /// Appends a NULL field.
    pub fn null(&mut self) -> &mut Self {
        self.separator();
        self.buffer.extend_from_slice(b"\\N");
        self
    }

    /// Appends any value printed with `Display` (numbers, booleans); must need no escaping.
    pub fn display(&mut self, value: impl std::fmt::Display) -> &mut Self {
        use std::io::Write;
        self.separator();
        // Writing to a Vec cannot fail.
        let _ = write!(self.buffer, "{value}");
        self
    }

    /// Appends a value printed with `Display`, or NULL.
    pub fn opt_display(&mut self, value: Option<impl std::fmt::Display>) -> &mut Self {
        match value {
            Some(v) => self.display(v),
            None => self.null(),
        }
    }

    /// Appends `values` as a `bytea` of little-endian f32s (the layout of `item_embeddings`),
    /// in hex form.
    pub fn f32_bytea(&mut self, values: &[f32]) -> &mut Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        self.separator();
        self.buffer.extend_from_slice(b"\\\\x");
        for b in values.iter().flat_map(|v| v.to_le_bytes()) {
            self.buffer.push(HEX[(b >> 4) as usize]);
            self.buffer.push(HEX[(b & 15) as usize]);
        }
        self
    }

    /// Ends the current row.
    pub fn end_row(&mut self) {
        self.buffer.push(b'\n');
        self.at_row_start = true;
    }

    /// Whether a chunk's worth of bytes is waiting.
    pub fn is_full(&self) -> bool {
        self.buffer.len() >= CHUNK_BYTES
    }

    /// Whether no byte is waiting.
    pub fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }

    /// The bytes of the complete rows so far, leaving room for the next chunk.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK_BYTES + 4096))
    }
}

/// Rows streamed into one `COPY ... FROM STDIN` statement (text format): fields are added
/// through [`CopyText`]'s methods, and each [`CopyRows::end_row`] sends the buffer when it is
/// large.
pub struct CopyRows<'c> {
    copy: PgCopyIn<&'c mut PgConnection>,
    rows: CopyText,
}

impl Deref for CopyRows<'_> {
    type Target = CopyText;

    fn deref(&self) -> &CopyText {
        &self.rows
    }
}

impl DerefMut for CopyRows<'_> {
    fn deref_mut(&mut self) -> &mut CopyText {
        &mut self.rows
    }
}

impl<'c> CopyRows<'c> {
    /// Starts `statement` (a `COPY table (cols) FROM STDIN`) on `connection`.
    pub async fn start(
        connection: &'c mut PgConnection,
        statement: &str,
    ) -> Result<Self, sqlx::Error> {
        let copy = connection.copy_in_raw(statement).await?;
        Ok(Self {
            copy,
            rows: CopyText::new(),
        })
    }

    /// Ends the current row, sending the buffer when it is large.
    pub async fn end_row(&mut self) -> Result<(), sqlx::Error> {
        self.rows.end_row();
        if self.rows.is_full() {
            self.copy.send(self.rows.take()).await?;
        }
        Ok(())
    }

    /// Sends what is left and completes the COPY; returns the number of rows written.
    pub async fn finish(mut self) -> Result<u64, sqlx::Error> {
        if !self.rows.is_empty() {
            self.copy
                .send(std::mem::take(&mut self.rows.buffer))
                .await?;
        }
        self.copy.finish().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_tab_separated_escaped_and_rows_end_with_a_newline() {
        let mut rows = CopyText::new();
        rows.text("a\tb\\c\nd\re").opt_text(None).display(1.5f32);
        rows.end_row();
        rows.opt_display(Some(true)).f32_bytea(&[1.0]).display(7);
        rows.end_row();
        assert_eq!(
            String::from_utf8(rows.take()).unwrap(),
            "a\\tb\\\\c\\nd\\re\t\\N\t1.5\ntrue\t\\\\x0000803f\t7\n"
        );
        assert!(rows.is_empty());
    }
}
