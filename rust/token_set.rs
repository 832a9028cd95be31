//! A set of token ids with constant-time membership, for the per-token hot loops.

/// Ids in `0..BITMAP_LIMIT` live in a bitmap (at most 2 MiB); any other id,
/// however large or negative, in a short sorted list. So a set never
/// allocates by the size of its largest id.
const BITMAP_LIMIT: i64 = 1 << 24;

/// Token ids as a bitmap (vocabulary-sized ids) plus a sorted list (the rest).
#[derive(Debug, Clone, Default)]
pub struct TokenSet {
    bits: Vec<u64>,
    others: Vec<i64>,
}

impl TokenSet {
    /// The set of `ids`.
    pub fn new(ids: impl IntoIterator<Item = i64>) -> TokenSet {
        let mut set = TokenSet::default();
        for id in ids {
            if !(0..BITMAP_LIMIT).contains(&id) {
                set.others.push(id);
                continue;
            }
            let word = (id >> 6) as usize;
            if word >= set.bits.len() {
                set.bits.resize(word + 1, 0);
            }
            set.bits[word] |= 1 << (id & 63);
        }
        set.others.sort_unstable();
        set.others.dedup();
        set
    }

    /// Whether `id` is in the set.
    #[inline]
    pub fn contains(&self, id: i64) -> bool {
        if (0..BITMAP_LIMIT).contains(&id) {
            return self
                .bits
                .get((id >> 6) as usize)
                .is_some_and(|w| w & (1 << (id & 63)) != 0);
        }
        !self.others.is_empty() && self.others.binary_search(&id).is_ok()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.others.is_empty() && self.bits.iter().all(|&w| w == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership() {
        let set = TokenSet::new([0, 63, 64, 151_655, -3]);
        for id in [0, 63, 64, 151_655, -3] {
            assert!(set.contains(id), "{id}");
        }
        for id in [1, 62, 65, 151_654, 151_656, 1 << 40, -1, i64::MIN, i64::MAX] {
            assert!(!set.contains(id), "{id}");
        }
    }

    #[test]
    fn huge_ids_do_not_size_the_set() {
        let huge = [1 << 62, i64::MAX, i64::MIN, BITMAP_LIMIT, BITMAP_LIMIT - 1];
        let set = TokenSet::new(huge);
        assert!(set.bits.len() <= (BITMAP_LIMIT as usize) / 64);
        for id in huge {
            assert!(set.contains(id), "{id}");
        }
        for id in [
            (1 << 62) - 1,
            (1 << 62) + 1,
            i64::MAX - 1,
            0,
            BITMAP_LIMIT + 1,
        ] {
            assert!(!set.contains(id), "{id}");
        }
        assert!(TokenSet::new([]).is_empty());
        assert!(!set.is_empty());
    }
}
