//! A list of item ids in one buffer: how the in-memory store keeps a shopper's items, and how
//! every store hands a shopper's capped and dismissed items to the request.

/// Longest id kept whole (ids reach the stores validated to at most 128 bytes).
const MAX_ID_BYTES: usize = u16::MAX as usize;

/// Item ids in one buffer, with a 4-byte header per id (its length and a 16-bit fingerprint)
/// in an array of their own. A `Box<str>` each would cost 16 bytes of pointer and a 32-byte
/// allocation for a 5-character id, and a `Vec<String>` of a shopper's capped items an
/// allocation per item per request. The headers are apart from the bytes so a search reads
/// them in sequence rather than hopping from one id to the next through its length
/// (`cargo bench --bench capping` measures it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemIds {
    headers: Vec<u32>,
    bytes: Vec<u8>,
}

/// The header of `id`: its length in the low 16 bits and a fingerprint of its bytes in the
/// high 16, so a search compares one `u32` per entry and the bytes only on a match: ids tend
/// to share a few lengths (the Online Retail ids are nearly all 5 or 6 characters), so a
/// length match alone would send nearly every entry through `memcmp`.
fn header(id: &[u8]) -> u32 {
    // FNV-1a: a few instructions per byte for ids of a few bytes, no state.
    let hash = id.iter().fold(0x811c_9dc5_u32, |hash, &byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    let fingerprint = (hash >> 16) ^ (hash & 0xffff);
    (fingerprint << 16) | id.len() as u32
}

/// The bytes kept of `id`: all of it, or when longer than a header can record (validated ids
/// never are), its start cut at a character boundary; searches cut the same way, so such an
/// id is still found.
fn stored_form(id: &str) -> &[u8] {
    let mut len = id.len().min(MAX_ID_BYTES);
    while !id.is_char_boundary(len) {
        len -= 1;
    }
    id.as_bytes().get(..len).unwrap_or_default()
}

/// The id length a header records.
fn id_len(header: u32) -> usize {
    (header & 0xffff) as usize
}

impl ItemIds {
    /// Number of ids.
    pub fn len(&self) -> usize {
        self.headers.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
    }

    /// Bytes of heap this list holds (its buffers' capacities).
    pub(super) fn heap_bytes(&self) -> usize {
        self.headers.capacity() * std::mem::size_of::<u32>() + self.bytes.capacity()
    }

    /// Makes room for `ids` more ids of `bytes` bytes in all, exactly.
    pub(super) fn reserve_exact(&mut self, ids: usize, bytes: usize) {
        self.headers.reserve_exact(ids);
        self.bytes.reserve_exact(bytes);
    }

    /// Each id's header with the byte range of the id, in order.
    fn ranges(&self) -> impl Iterator<Item = (u32, std::ops::Range<usize>)> + '_ {
        self.headers.iter().scan(0, |at, &header| {
            let start = *at;
            *at += id_len(header);
            Some((header, start..*at))
        })
    }

    /// The ids, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        self.ranges().map(|(_, range)| {
            // Only whole `str`s (cut at character boundaries) are ever stored.
            self.bytes
                .get(range)
                .and_then(|id| std::str::from_utf8(id).ok())
                .unwrap_or_default()
        })
    }

    /// The position of `id`; this runs for every item of every list served.
    pub(super) fn position(&self, id: &str) -> Option<usize> {
        let target = stored_form(id);
        let wanted = header(target);
        self.ranges()
            .position(|(found, range)| found == wanted && self.bytes.get(range) == Some(target))
    }

    /// The ids at the positions `wanted` accepts, in order, copied as stored (no hashing and
    /// no UTF-8 check per id: a shopper's list is scanned for capped items on every request).
    pub(super) fn select(&self, mut wanted: impl FnMut(usize) -> bool) -> Self {
        let mut selected = Self::default();
        for (index, (header, range)) in self.ranges().enumerate() {
            if wanted(index) {
                if let Some(id) = self.bytes.get(range) {
                    selected.headers.push(header);
                    selected.bytes.extend_from_slice(id);
                }
            }
        }
        selected
    }

    /// Appends `id` (an id over 64 KiB keeps only its start; see `stored_form`).
    pub fn push(&mut self, id: &str) {
        let id = stored_form(id);
        self.headers.push(header(id));
        self.bytes.extend_from_slice(id);
    }

    /// Removes the id at `at` (later ones move up one place).
    pub(super) fn remove(&mut self, at: usize) {
        let range = self.ranges().nth(at).map(|(_, range)| range);
        if let Some(range) = range {
            self.bytes.drain(range);
            self.headers.remove(at);
        }
    }
}

impl<'a> FromIterator<&'a str> for ItemIds {
    fn from_iter<I: IntoIterator<Item = &'a str>>(ids: I) -> Self {
        let mut list = Self::default();
        ids.into_iter().for_each(|id| list.push(id));
        list
    }
}

/// The ids equal these, in this order (for tests and assertions).
impl<const N: usize> PartialEq<[&str; N]> for ItemIds {
    fn eq(&self, other: &[&str; N]) -> bool {
        self.len() == N && self.iter().eq(other.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_any_length_and_script_round_trip() {
        let long = "x".repeat(300);
        let mut ids: ItemIds = ["", "a", "ÄÖ-ß", long.as_str(), "b"].into_iter().collect();
        assert_eq!(ids.len(), 5);
        assert_eq!(ids.position("b"), Some(4));
        assert_eq!(ids.position(&long), Some(3));
        ids.remove(2);
        let all: Vec<&str> = ids.iter().collect();
        assert_eq!(all, ["", "a", &long, "b"]);
        assert_eq!(
            ids.position("b"),
            Some(3),
            "ids after the removed one move up"
        );
        assert_eq!(ids.position(&long), Some(2));
        ids.remove(9);
        assert_eq!(ids.len(), 4, "removing past the end changes nothing");
        assert_eq!(ids.position("ÄÖ-ß"), None);
        assert_eq!(ids.position("c"), None);
        let odd = ids.select(|at| at % 2 == 1);
        assert_eq!(odd, ["a", "b"]);
        assert_eq!(odd.position("b"), Some(1));
    }

    #[test]
    fn an_id_past_the_length_limit_is_cut_at_a_character_boundary() {
        let id = format!("{}é", "x".repeat(MAX_ID_BYTES - 1));
        let ids: ItemIds = [id.as_str(), "after"].into_iter().collect();
        let all: Vec<&str> = ids.iter().collect();
        assert_eq!(all, [&id[..MAX_ID_BYTES - 1], "after"]);
        assert_eq!(ids.position(&id), Some(0), "found by the same cut");
    }

    #[test]
    fn ids_that_share_a_length_are_told_apart() {
        // Every 2-character id over a small alphabet: fingerprints collide among some of
        // them, so a match must still be confirmed on the bytes.
        let alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
        let all: Vec<String> = alphabet
            .chars()
            .flat_map(|a| alphabet.chars().map(move |b| format!("{a}{b}")))
            .collect();
        let ids: ItemIds = all.iter().map(String::as_str).collect();
        for (at, id) in all.iter().enumerate() {
            assert_eq!(ids.position(id), Some(at), "{id}");
        }
        assert_eq!(ids.position("zz!"), None);
    }
}
