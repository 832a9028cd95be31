//! A set of token ids with constant-time membership, for the per-token hot loops.

/// Token ids as a bitset (non-negative ids) plus a short list (negative ids).
#[derive(Debug, Clone, Default)]
pub struct TokenSet {
    bits: Vec<u64>,
    negative: Vec<i64>,
}

impl TokenSet {
    /// The set of `ids`.
    pub fn new(ids: impl IntoIterator<Item = i64>) -> TokenSet {
        let mut set = TokenSet::default();
        for id in ids {
            if id < 0 {
                set.negative.push(id);
                continue;
            }
            let word = (id as u64 >> 6) as usize;
            if word >= set.bits.len() {
                set.bits.resize(word + 1, 0);
            }
            set.bits[word] |= 1 << (id & 63);
        }
        set
    }

    /// Whether `id` is in the set.
    #[inline]
    pub fn contains(&self, id: i64) -> bool {
        if id < 0 {
            return self.negative.contains(&id);
        }
        self.bits
            .get((id as u64 >> 6) as usize)
            .is_some_and(|w| w & (1 << (id & 63)) != 0)
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
}
