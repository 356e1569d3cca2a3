//! Baskets as compressed rows of dense item numbers, and their inverted index.

/// Baskets of dense item numbers `0..items`, each with distinct items.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Baskets {
    items: usize,
    offsets: Vec<usize>,
    entries: Vec<u32>,
}

impl Baskets {
    /// No baskets over `items` items.
    pub fn new(items: usize) -> Self {
        Self {
            items,
            offsets: vec![0],
            entries: Vec::new(),
        }
    }

    /// Adds a basket of distinct item numbers below `items`.
    pub fn push(&mut self, basket: &[u32]) {
        debug_assert!(basket.iter().all(|&i| (i as usize) < self.items));
        self.entries.extend_from_slice(basket);
        self.offsets.push(self.entries.len());
    }

    /// Number of baskets.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Whether there are no baskets.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of items.
    pub fn items(&self) -> usize {
        self.items
    }

    /// Basket `b`.
    #[inline]
    pub fn basket(&self, b: usize) -> &[u32] {
        &self.entries[self.offsets[b]..self.offsets[b + 1]]
    }

    /// Baskets holding each item.
    pub fn item_counts(&self) -> Vec<u32> {
        let mut counts = vec![0u32; self.items];
        for &i in &self.entries {
            counts[i as usize] += 1;
        }
        counts
    }

    /// The inverted index: for each item, the baskets holding it (CSR offsets and baskets).
    pub(super) fn inverted(&self, counts: &[u32]) -> (Vec<usize>, Vec<u32>) {
        let mut offsets = Vec::with_capacity(self.items + 1);
        offsets.push(0);
        for &c in counts {
            offsets.push(offsets.last().copied().unwrap_or(0) + c as usize);
        }
        let mut fill = offsets.clone();
        let mut baskets = vec![0u32; self.entries.len()];
        for b in 0..self.len() {
            for &i in self.basket(b) {
                baskets[fill[i as usize]] = b as u32;
                fill[i as usize] += 1;
            }
        }
        (offsets, baskets)
    }
}
