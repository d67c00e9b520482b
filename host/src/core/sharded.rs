//! A hash map in shards, for the core's tables that grow to a million entries: a
//! `HashMap` doubles by moving every entry at once, which held the single SIP core for
//! hundreds of milliseconds at a time under a flood of new registrations (a million
//! AoRs: the legitimate clients' p99 was the length of those rehashes). In 64 shards
//! each doubling moves a 64th of the table.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};

use foldhash::HashMap;

/// Shards; a power of two.
const SHARDS: usize = 64;

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
        self.shards[s].insert(key, value)
    }

    pub(crate) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let s = self.shard_of(key);
        self.shards[s].remove(key)
    }

    pub(crate) fn entry(&mut self, key: K) -> std::collections::hash_map::Entry<'_, K, V> {
        let s = self.shard_of(&key);
        self.shards[s].entry(key)
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

    pub(crate) fn capacity(&self) -> usize {
        self.shards.iter().map(HashMap::capacity).sum()
    }

    /// [`super::location::shrink_map`] for each shard that is large enough to look
    /// at; whether the table as a whole still is.
    pub(crate) fn shrink(&mut self) -> bool {
        for s in &mut self.shards {
            if s.capacity() >= super::location::SHRINK_FROM / SHARDS && s.len() * 4 < s.capacity() {
                s.shrink_to_fit();
            }
        }
        self.capacity() >= super::location::SHRINK_FROM
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
        *m.entry("sip:u78@example.com".into()).or_default() += 1;
        assert_eq!(m.get("sip:u78@example.com"), Some(&79));
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
}
