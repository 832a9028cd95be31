//! Subsequence search over token ids in linear time (Knuth–Morris–Pratt).

/// Prefix-function table of `pattern`: `table[i]` is the length of the longest
/// proper prefix of `pattern[..=i]` that is also its suffix.
fn prefix_table(pattern: &[i64]) -> Vec<usize> {
    let mut table = vec![0usize; pattern.len()];
    let mut k = 0usize;
    for i in 1..pattern.len() {
        while k > 0 && pattern[i] != pattern[k] {
            k = table[k - 1];
        }
        if pattern[i] == pattern[k] {
            k += 1;
        }
        table[i] = k;
    }
    table
}

/// Start index of the first exact occurrence of a non-empty `pattern` in
/// `haystack` at or after `start`, in O(n + m).
fn first_exact(haystack: &[i64], pattern: &[i64], start: usize) -> Option<usize> {
    let m = pattern.len();
    if start > haystack.len() || haystack.len() - start < m {
        return None;
    }
    let table = prefix_table(pattern);
    let mut k = 0usize;
    for (i, &token) in haystack.iter().enumerate().skip(start) {
        while k > 0 && token != pattern[k] {
            k = table[k - 1];
        }
        if token == pattern[k] {
            k += 1;
        }
        if k == m {
            return Some(i + 1 - m);
        }
    }
    None
}

/// First occurrence of `pattern` in `haystack` at or after `start`, as the
/// half-open span `(start, end)`.
///
/// With `allow_first_token_mismatch`, a window whose first token differs but
/// whose remaining tokens match also counts (the first token of a reply can
/// merge with the text before it). An empty pattern matches at `start`.
pub fn find_subsequence(
    haystack: &[i64],
    pattern: &[i64],
    start: usize,
    allow_first_token_mismatch: bool,
) -> Option<(usize, usize)> {
    let m = pattern.len();
    if start > haystack.len() {
        return None;
    }
    if m == 0 {
        return Some((start, start));
    }
    if haystack.len() - start < m {
        return None;
    }
    if !allow_first_token_mismatch {
        return first_exact(haystack, pattern, start).map(|s| (s, s + m));
    }
    if m == 1 {
        return Some((start, start + 1));
    }
    // The window at i matches when pattern[1..] occurs at i + 1.
    first_exact(haystack, &pattern[1..], start + 1).map(|s| (s - 1, s - 1 + m))
}

/// First occurrence of a reply's tokens at or after `start`, tolerating the
/// merges that tokenizing a reply on its own cannot see: tried in order exactly,
/// with the first token differing, with the last token differing, and with
/// both differing (each relaxation needs enough tokens left to match).
pub fn find_reply(haystack: &[i64], reply: &[i64], start: usize) -> Option<(usize, usize)> {
    let m = reply.len();
    // The whole reply, its first token free when `free_first`.
    let whole = |free_first: bool| find_subsequence(haystack, reply, start, free_first);
    // The reply but its last token, which is then taken whatever it is.
    let open_end = |free_first: bool| {
        find_subsequence(haystack, &reply[..m - 1], start, free_first)
            .filter(|&(_, e)| e < haystack.len())
            .map(|(s, e)| (s, e + 1))
    };
    whole(false)
        .or_else(|| (m >= 2).then(|| whole(true)).flatten())
        .or_else(|| (m >= 2).then(|| open_end(false)).flatten())
        .or_else(|| (m >= 3).then(|| open_end(true)).flatten())
}

/// Whether `pattern` occurs in `haystack` exactly at `at`.
pub fn matches_at(haystack: &[i64], pattern: &[i64], at: usize) -> bool {
    at.checked_add(pattern.len())
        .is_some_and(|end| end <= haystack.len() && &haystack[at..end] == pattern)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(h: &[i64], p: &[i64], start: usize, flag: bool) -> Option<(usize, usize)> {
        let m = p.len();
        if start > h.len() {
            return None;
        }
        (start..=h.len().saturating_sub(m))
            .filter(|&i| i + m <= h.len())
            .find(|&i| h[i..i + m] == *p || (flag && m > 0 && h[i + 1..i + m] == p[1..]))
            .map(|i| (i, i + m))
    }

    #[test]
    fn finds_first_occurrence_after_start() {
        let h = [1, 2, 3, 1, 2, 3];
        assert_eq!(find_subsequence(&h, &[1, 2], 0, false), Some((0, 2)));
        assert_eq!(find_subsequence(&h, &[1, 2], 1, false), Some((3, 5)));
        assert_eq!(find_subsequence(&h, &[3, 4], 0, false), None);
        assert_eq!(find_subsequence(&h, &[1, 2, 3, 1, 2, 3, 1], 0, false), None);
        assert_eq!(find_subsequence(&h, &[1], 9, false), None);
    }

    #[test]
    fn first_token_mismatch_allows_merged_first_token() {
        let h = [7, 9, 5, 6, 8];
        assert_eq!(find_subsequence(&h, &[4, 5, 6], 0, false), None);
        assert_eq!(find_subsequence(&h, &[4, 5, 6], 0, true), Some((1, 4)));
        // An exact match is also a match with the flag.
        assert_eq!(find_subsequence(&h, &[9, 5, 6], 0, true), Some((1, 4)));
    }

    #[test]
    fn overlapping_patterns_use_the_prefix_table() {
        let h = [1, 1, 1, 2, 1, 1, 2];
        assert_eq!(find_subsequence(&h, &[1, 1, 2], 0, false), Some((1, 4)));
        assert_eq!(find_subsequence(&h, &[1, 1, 2], 2, false), Some((4, 7)));
    }

    #[test]
    fn agrees_with_naive_search_exhaustively_on_small_alphabet() {
        // All haystacks of length <= 7 and patterns of length <= 3 over {0, 1}.
        for n in 0..=7 {
            for hbits in 0..(1u32 << n) {
                let h: Vec<i64> = (0..n).map(|i| ((hbits >> i) & 1) as i64).collect();
                for m in 0..=3 {
                    for pbits in 0..(1u32 << m) {
                        let p: Vec<i64> = (0..m).map(|i| ((pbits >> i) & 1) as i64).collect();
                        for start in 0..=n + 1 {
                            for flag in [false, true] {
                                assert_eq!(
                                    find_subsequence(&h, &p, start, flag),
                                    naive(&h, &p, start, flag),
                                    "h={h:?} p={p:?} start={start} flag={flag}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
