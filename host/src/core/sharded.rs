//! A hash map in shards, for the core's tables that grow to a million entries: a
//! `HashMap` doubles by moving every entry at once, which held the single SIP core for
//! hundreds of milliseconds at a time under a flood of new registrations (a million
//! AoRs: the legitimate clients' p99 was the length of those rehashes). In 64 shards
//! each doubling moves a 64th of the table, and the shards double at different fills
//! (see [`Sharded::grow_early`]): filled evenly by the hash, they would otherwise all
//! double within a few thousand inserts of each other, which is the same stall again
//! (measured: ~0.5 s of rehashing and fresh pages at 900,000 AoRs).

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};

use foldhash::HashMap;

/// Shards; a power of two.
const SHARDS: usize = 64;

/// Tables smaller than this are never shrunk (not worth the rehash).
pub(crate) const SHRINK_FROM: usize = 4096;

/// Tables whose entries take less room than this are never shrunk: they sit in the
/// allocator's small size classes, whose 64 KiB pages a flood's leftovers cannot
/// hold much of. Above it (mimalloc's large classes, pages of megabytes) a table a
/// flood grew and left nearly empty would keep a whole page in memory.
pub(crate) const SHRINK_FROM_BYTES: usize = 16 * 1024;

/// Shrinks `map` to fit when it holds under a quarter of its capacity and its entries
/// take [`SHRINK_FROM_BYTES`] or more; whether its capacity is still at least
/// [`SHRINK_FROM`]: for the tables that are not sharded.
pub(crate) fn shrink_map<K: Eq + Hash, V, S: BuildHasher>(
    map: &mut std::collections::HashMap<K, V, S>,
) -> bool {
    let bytes = map.capacity() * std::mem::size_of::<(K, V)>();
    if bytes >= SHRINK_FROM_BYTES && map.len() * 4 < map.capacity() {
        map.shrink_to_fit();
    }
    map.capacity() >= SHRINK_FROM
}

/// Shards smaller than this grow when full, as any `HashMap` does: their doublings
/// cost microseconds.
const STAGGER_FROM: usize = 1024;

/// A hash map split into [`SHARDS`] maps by the key's hash.
#[derive(Debug)]
pub(crate) struct Sharded<K, V> {
    shards: Vec<HashMap<K, V>>,
    pick: foldhash::fast::FixedState,
}

impl<K, V> Default for Sharded<K, V> {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| HashMap::default()).collect(),
            pick: foldhash::fast::FixedState::with_seed(0x5eed_5a1d),
        }
    }
}

impl<K: Eq + Hash, V> Sharded<K, V> {
    fn shard_of<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        // The top bits: the shard's own map uses the low ones of its (other) hash.
        (self.pick.hash_one(key) >> 58) as usize % SHARDS
    }

    pub(crate) fn get_key_value<Q>(&self, key: &Q) -> Option<(&K, &V)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards[self.shard_of(key)].get_key_value(key)
    }

    pub(crate) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards[self.shard_of(key)].get(key)
    }

    pub(crate) fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let s = self.shard_of(key);
        self.shards[s].get_mut(key)
    }

    pub(crate) fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards[self.shard_of(key)].contains_key(key)
    }

    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        let s = self.shard_of(&key);
        self.grow_early(s);
        self.shards[s].insert(key, value)
    }

    /// Doubles shard `s` before it is full: shard `s` at `1 - s/128` of its capacity,
    /// so that the 64 doublings of a growing table are spread over the time it takes
    /// to grow by half rather than bunched where every shard fills up at once. Costs
    /// up to a third more table memory on average.
    fn grow_early(&mut self, s: usize) {
        let shard = &mut self.shards[s];
        let cap = shard.capacity();
        if cap < STAGGER_FROM {
            return;
        }
        let at = cap - cap * s / (2 * SHARDS);
        if shard.len() >= at && shard.len() < cap {
            shard.reserve(cap + 1 - shard.len());
        }
    }

    pub(crate) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let s = self.shard_of(key);
        self.shards[s].remove(key)
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.shards.iter().all(HashMap::is_empty)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(HashMap::iter)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.shards.iter().flat_map(HashMap::values)
    }

    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        for s in &mut self.shards {
            s.retain(&mut keep);
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.shards.iter().map(HashMap::capacity).sum()
    }

    /// [`shrink_map`] for each shard that is large enough to look
    /// at; whether the table as a whole still is.
    pub(crate) fn shrink(&mut self) -> bool {
        for s in &mut self.shards {
            if s.capacity() >= SHRINK_FROM / SHARDS && s.len() * 4 < s.capacity() {
                s.shrink_to_fit();
            }
        }
        self.capacity() >= SHRINK_FROM
    }
}

impl<K, Q, V> std::ops::Index<&Q> for Sharded<K, V>
where
    K: Eq + Hash + Borrow<Q>,
    Q: Hash + Eq + ?Sized,
{
    type Output = V;

    fn index(&self, key: &Q) -> &V {
        self.get(key).expect("no entry for the key")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_in_shards_behaves_as_one() {
        let mut m: Sharded<String, u32> = Sharded::default();
        assert!(m.is_empty());
        for i in 0..10_000u32 {
            assert_eq!(m.insert(format!("sip:u{i}@example.com"), i), None);
        }
        assert_eq!(m.len(), 10_000);
        assert_eq!(m.get("sip:u77@example.com"), Some(&77));
        *m.get_mut("sip:u77@example.com").unwrap() += 1;
        assert_eq!(m.get("sip:u77@example.com"), Some(&78));
        assert!(m.contains_key("sip:u9999@example.com"));
        assert_eq!(m.values().count(), 10_000);
        // Spread over the shards, not piled into one.
        assert!(m.shards.iter().all(|s| s.len() > 10_000 / SHARDS / 2));
        for i in 0..9_990u32 {
            assert!(m.remove(format!("sip:u{i}@example.com").as_str()).is_some());
        }
        assert_eq!(m.len(), 10);
        let before = m.capacity();
        m.shrink();
        assert!(m.capacity() < before / 4, "{} → {}", before, m.capacity());
        assert_eq!(m.get("sip:u9995@example.com"), Some(&9995));
    }

    /// The shards of a growing table double at different times: while the table grows
    /// by a 32nd, no more than a quarter of them double (filled evenly, all 64 would
    /// double within a few hundredths of the table's size of each other).
    #[test]
    fn the_shards_of_a_growing_table_do_not_double_together() {
        let mut m: Sharded<u64, u64> = Sharded::default();
        let n = 1 << 20;
        let mut doublings = Vec::new();
        let mut caps: Vec<usize> = m.shards.iter().map(HashMap::capacity).collect();
        for i in 0..n as u64 {
            let s = m.shard_of(&i);
            m.insert(i, i);
            let c = m.shards[s].capacity();
            if c != caps[s] {
                if caps[s] >= STAGGER_FROM {
                    doublings.push(i as usize);
                }
                caps[s] = c;
            }
        }
        assert!(doublings.len() >= 3 * SHARDS, "{}", doublings.len());
        let (bunched, at) = doublings
            .iter()
            .map(|&at| {
                let until = at + at / 32;
                let n = doublings.iter().filter(|&&d| d >= at && d < until).count();
                (n, at)
            })
            .max()
            .unwrap_or((0, 0));
        assert!(
            bunched <= SHARDS / 4,
            "{bunched} doublings from {at} to {}",
            at + at / 32
        );
        assert_eq!(m.len(), n);
        assert_eq!(m.get(&12_345), Some(&12_345));
    }
}
