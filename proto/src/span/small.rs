//! `SmallMap`: a map that is a short vector while small and a hash map once large.
//!
//! Per-link and per-neighbour span state is tiny for a satellite's clients (one or two spans
//! each way) and large for a router (thousands). A hash map's smallest allocation holds four
//! slots and control bytes; a vector grown one slot at a time holds exactly what it has. Past
//! [`SMALL`] entries the map switches to hashing, so lookups stay O(1) on routers.

use std::collections::HashMap;
use std::hash::Hash;

/// Entries kept in the vector form; the ninth switches to a hash map.
const SMALL: usize = 8;

type Hashed<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// See the module documentation.
#[derive(Debug)]
pub(crate) enum SmallMap<K, V> {
    Small(Vec<(K, V)>),
    /// Boxed, so that the common small form costs a vector and a tag, not a whole hash map.
    Large(Box<Hashed<K, V>>),
}

impl<K, V> Default for SmallMap<K, V> {
    fn default() -> Self {
        SmallMap::Small(Vec::new())
    }
}

impl<K: Copy + Eq + Hash, V> SmallMap<K, V> {
    pub(crate) fn len(&self) -> usize {
        match self {
            SmallMap::Small(v) => v.len(),
            SmallMap::Large(m) => m.len(),
        }
    }

    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        match self {
            SmallMap::Small(v) => v.iter().find(|(k, _)| k == key).map(|(_, value)| value),
            SmallMap::Large(m) => m.get(key),
        }
    }

    pub(crate) fn contains_key(&self, key: &K) -> bool {
        self.get(key).is_some()
    }

    /// Inserts, returning the value it replaced.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self {
            SmallMap::Small(v) => {
                if let Some((_, old)) = v.iter_mut().find(|(k, _)| *k == key) {
                    return Some(std::mem::replace(old, value));
                }
                if v.len() < SMALL {
                    // One slot at a time: small maps hold exactly what they have.
                    v.reserve_exact(1);
                    v.push((key, value));
                    return None;
                }
                let mut map = Hashed::with_capacity_and_hasher(2 * SMALL, Default::default());
                map.extend(v.drain(..));
                map.insert(key, value);
                *self = SmallMap::Large(Box::new(map));
                None
            }
            SmallMap::Large(m) => m.insert(key, value),
        }
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        match self {
            SmallMap::Small(v) => {
                let i = v.iter().position(|(k, _)| k == key)?;
                let (_, value) = v.swap_remove(i);
                if v.is_empty() {
                    // An idle link keeps no allocation.
                    *v = Vec::new();
                }
                Some(value)
            }
            SmallMap::Large(m) => m.remove(key),
        }
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &K> {
        let (small, large) = match self {
            SmallMap::Small(v) => (Some(v.iter().map(|(k, _)| k)), None),
            SmallMap::Large(m) => (None, Some(m.keys())),
        };
        small.into_iter().flatten().chain(large.into_iter().flatten())
    }

    pub(crate) fn clear(&mut self) {
        *self = SmallMap::Small(Vec::new());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_a_map_across_the_switch() {
        let mut m = SmallMap::default();
        let mut model = std::collections::BTreeMap::new();
        for round in 0..3u32 {
            for k in 0..40u32 {
                let v = k * 10 + round;
                assert_eq!(m.insert(k, v), model.insert(k, v));
                assert_eq!(m.len(), model.len());
            }
            for k in (0..40u32).filter(|k| k % 3 == round % 3) {
                assert_eq!(m.remove(&k), model.remove(&k));
            }
            for k in 0..40u32 {
                assert_eq!(m.get(&k), model.get(&k));
                assert_eq!(m.contains_key(&k), model.contains_key(&k));
            }
            let mut keys: Vec<u32> = m.keys().copied().collect();
            keys.sort_unstable();
            assert_eq!(keys, model.keys().copied().collect::<Vec<_>>());
        }
        m.clear();
        assert_eq!(m.len(), 0);
        assert_eq!(m.get(&1), None);
    }

    #[test]
    fn stays_small_and_exact_while_small() {
        let mut m = SmallMap::default();
        m.insert(1u8, [0u8; 100]);
        let SmallMap::Small(v) = &m else { panic!("small") };
        assert_eq!(v.capacity(), 1);
        m.remove(&1);
        let SmallMap::Small(v) = &m else { panic!("small") };
        assert_eq!(v.capacity(), 0);
    }
}
