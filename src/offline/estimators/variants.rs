//! Variants of one product (`85099B`/`85099C`): alternatives, never each other's complements.

use foldhash::{HashMap, HashMapExt};

/// The variant group of each item id: ids made of the same digits followed by different
/// letters (`85099B`, `85099C`, `85099`) share a group; `u32::MAX` means none.
pub fn variant_groups<'a>(ids: impl IntoIterator<Item = &'a str>) -> Vec<u32> {
    let mut stems: HashMap<&'a str, u32> = HashMap::with_capacity(4096);
    ids.into_iter()
        .map(|id| match variant_stem(id) {
            Some(stem) => {
                let next = stems.len() as u32;
                *stems.entry(stem).or_insert(next)
            }
            None => u32::MAX,
        })
        .collect()
}

/// The digit stem of a stock code with optional trailing letters (`85099B` -> `85099`).
pub fn variant_stem(id: &str) -> Option<&str> {
    let digits = id.bytes().take_while(u8::is_ascii_digit).count();
    (digits >= 3 && id.bytes().skip(digits).all(|b| b.is_ascii_alphabetic())).then(|| &id[..digits])
}
