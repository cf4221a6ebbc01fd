//! An order-statistic index: a sorted set that also answers "what is the rank of this key"
//! and "which keys come first", for leaderboards of tens of thousands of players.
//!
//! It is a sqrt decomposition: a list of sorted blocks, each holding at most
//! [`MAX_BLOCK`] keys, every key of a block smaller than every key of the next. Finding a key's
//! block is a binary search over the blocks' last keys; its rank is the sizes of the earlier
//! blocks plus its position in its own block. For 50,000 players that is about a hundred block
//! sizes to add and two binary searches: a few microseconds, with none of a balanced tree's
//! pointer chasing. The caller owns the keys' meaning; this module only orders them.

/// Blocks split in two when they grow past this. Inserting into a block shifts up to this
/// many keys, and a rank adds up to `n / (MAX_BLOCK / 2)` block sizes; 512 balances the two
/// for the sizes a quiz reaches.
pub const MAX_BLOCK: usize = 512;

/// A block smaller than this is merged into a neighbour when that keeps it under
/// [`MAX_BLOCK`], so removals cannot leave a long list of tiny blocks behind.
const MIN_BLOCK: usize = MAX_BLOCK / 4;

/// A sorted set of keys with rank and position queries.
#[derive(Clone, Debug)]
pub struct RankIndex<K> {
    /// Sorted, non-empty blocks in order.
    blocks: Vec<Vec<K>>,
    len: usize,
}

impl<K> Default for RankIndex<K> {
    fn default() -> Self {
        Self {
            blocks: Vec::new(),
            len: 0,
        }
    }
}

impl<K: Ord + Copy> RankIndex<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// A set holding `keys` (in any order; duplicates are kept once).
    pub fn from_keys(mut keys: Vec<K>) -> Self {
        keys.sort_unstable();
        keys.dedup();
        let len = keys.len();
        let blocks = keys.chunks(MAX_BLOCK / 2).map(<[K]>::to_vec).collect();
        Self { blocks, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        self.blocks.clear();
        self.len = 0;
    }

    /// Adds `key`; false if it was already there.
    pub fn insert(&mut self, key: K) -> bool {
        if self.blocks.is_empty() {
            self.blocks.push(vec![key]);
            self.len = 1;
            return true;
        }
        // The first block whose last key is not below `key`, or the last block for a key
        // greater than every key held.
        let b = self.block_of(&key).min(self.blocks.len() - 1);
        let block = &mut self.blocks[b];
        match block.binary_search(&key) {
            Ok(_) => return false,
            Err(at) => block.insert(at, key),
        }
        self.len += 1;
        if block.len() > MAX_BLOCK {
            let upper = block.split_off(block.len() / 2);
            self.blocks.insert(b + 1, upper);
        }
        true
    }

    /// Removes `key`; false if it was not there.
    pub fn remove(&mut self, key: &K) -> bool {
        let b = self.block_of(key);
        let Some(block) = self.blocks.get_mut(b) else {
            return false;
        };
        let Ok(at) = block.binary_search(key) else {
            return false;
        };
        block.remove(at);
        self.len -= 1;
        if block.is_empty() {
            self.blocks.remove(b);
        } else if block.len() < MIN_BLOCK {
            self.merge_small(b);
        }
        true
    }

    pub fn contains(&self, key: &K) -> bool {
        self.blocks
            .get(self.block_of(key))
            .is_some_and(|block| block.binary_search(key).is_ok())
    }

    /// The 1-based position of `key`, if it is present.
    pub fn rank(&self, key: &K) -> Option<usize> {
        let b = self.block_of(key);
        let at = self.blocks.get(b)?.binary_search(key).ok()?;
        let before: usize = self.blocks[..b].iter().map(Vec::len).sum();
        Some(before + at + 1)
    }

    /// The key at 0-based position `n`.
    pub fn nth(&self, mut n: usize) -> Option<K> {
        for block in &self.blocks {
            match block.get(n) {
                Some(key) => return Some(*key),
                None => n -= block.len(),
            }
        }
        None
    }

    /// The first `n` keys (fewer if the set is smaller).
    pub fn first(&self, n: usize) -> Vec<K> {
        self.iter().take(n).copied().collect()
    }

    /// Every key, in order.
    pub fn iter(&self) -> impl Iterator<Item = &K> + '_ {
        self.blocks.iter().flatten()
    }

    /// The index of the block that holds `key` or would: the first whose last key is not
    /// below it. Equal to `blocks.len()` when `key` is above every key.
    fn block_of(&self, key: &K) -> usize {
        self.blocks
            .partition_point(|block| block.last().is_some_and(|last| last < key))
    }

    /// Merges block `b` (which just got small) into a neighbour if the result fits.
    fn merge_small(&mut self, b: usize) {
        let size = self.blocks[b].len();
        if b > 0 && self.blocks[b - 1].len() + size <= MAX_BLOCK {
            let block = self.blocks.remove(b);
            self.blocks[b - 1].extend(block);
        } else if b + 1 < self.blocks.len() && self.blocks[b + 1].len() + size <= MAX_BLOCK {
            let next = self.blocks.remove(b + 1);
            self.blocks[b].extend(next);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn ranks_are_one_based_positions() {
        let mut index = RankIndex::new();
        for k in [30, 10, 20] {
            assert!(index.insert(k));
        }
        assert!(!index.insert(20), "a key is held once");
        assert_eq!(index.rank(&10), Some(1));
        assert_eq!(index.rank(&30), Some(3));
        assert_eq!(index.rank(&15), None);
        assert_eq!(index.nth(1), Some(20));
        assert_eq!(index.nth(3), None);
        assert_eq!(index.first(2), vec![10, 20]);
        assert!(index.remove(&10));
        assert!(!index.remove(&10));
        assert_eq!(index.rank(&30), Some(2));
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn many_keys_split_and_merge_blocks() {
        let mut index = RankIndex::new();
        // A stride coprime with the count visits every key once, out of order.
        let n = 5_000u32;
        for i in 0..n {
            index.insert((i * 7919) % n);
        }
        assert_eq!(index.len(), n as usize);
        assert!(index.blocks.len() > 10);
        assert!(index.blocks.iter().all(|b| b.len() <= MAX_BLOCK));
        for k in [0, 1, 2_500, 4_999] {
            assert_eq!(index.rank(&k), Some(k as usize + 1));
            assert_eq!(index.nth(k as usize), Some(k));
        }
        for k in (0..n).filter(|k| k % 10 != 0) {
            assert!(index.remove(&k));
        }
        assert_eq!(index.len(), 500);
        assert_eq!(index.rank(&4_990), Some(500));
        assert!(index.blocks.iter().all(|b| !b.is_empty()));
        assert!(index.blocks.len() <= 4, "small blocks were merged");
    }

    #[test]
    fn from_keys_sorts_and_dedups() {
        let index = RankIndex::from_keys(vec![5, 1, 5, 3]);
        assert_eq!(index.iter().copied().collect::<Vec<_>>(), vec![1, 3, 5]);
        assert_eq!(index.len(), 3);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u16),
        Remove(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => any::<u16>().prop_map(|k| Op::Insert(k % 2_000)),
            2 => any::<u16>().prop_map(|k| Op::Remove(k % 2_000)),
        ]
    }

    proptest! {
        /// The index agrees with a sorted, deduplicated Vec under any mix of inserts and
        /// removes (a small key range makes hits, misses and block splits all common).
        #[test]
        fn agrees_with_a_sorted_vec(ops in prop::collection::vec(op(), 0..3_000)) {
            let mut index = RankIndex::new();
            let mut model: Vec<u16> = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(k) => {
                        let fresh = model.binary_search(&k).map_err(|at| model.insert(at, k)).is_err();
                        prop_assert_eq!(index.insert(k), fresh);
                    }
                    Op::Remove(k) => {
                        let held = model.binary_search(&k).map(|at| model.remove(at)).is_ok();
                        prop_assert_eq!(index.remove(&k), held);
                    }
                }
            }
            prop_assert_eq!(index.len(), model.len());
            prop_assert_eq!(index.iter().copied().collect::<Vec<_>>(), model.clone());
            for (i, k) in model.iter().enumerate() {
                prop_assert_eq!(index.rank(k), Some(i + 1));
                prop_assert_eq!(index.nth(i), Some(*k));
                prop_assert!(index.contains(k));
            }
            prop_assert_eq!(index.nth(model.len()), None);
            prop_assert_eq!(index.first(5), model.iter().take(5).copied().collect::<Vec<_>>());
        }
    }
}
