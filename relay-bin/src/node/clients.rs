//! [`Slots`]: a core's table of client connections, addressed by poller tokens that carry a generation,
//! so a readiness report for a closed connection can never reach the connection that reused its slot.

/// A token: slot index in the low 32 bits, the slot's generation in the high 32.
pub type Token = u64;

/// A slab of `T` with generation-checked tokens.
#[derive(Debug)]
pub struct Slots<T> {
    entries: Vec<(u32, Option<T>)>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            entries: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slots<T> {
    /// Stores `value`; returns its token.
    pub fn insert(&mut self, value: T) -> Token {
        self.len += 1;
        if let Some(index) = self.free.pop() {
            if let Some(entry) = self.entries.get_mut(index as usize) {
                entry.0 = entry.0.wrapping_add(1);
                entry.1 = Some(value);
                return (u64::from(entry.0) << 32) | u64::from(index);
            }
        }
        let index = self.entries.len() as u32;
        self.entries.push((0, Some(value)));
        u64::from(index)
    }

    fn slot(token: Token) -> (usize, u32) {
        ((token & 0xffff_ffff) as usize, (token >> 32) as u32)
    }

    /// The value of a live token.
    pub fn get(&self, token: Token) -> Option<&T> {
        let (index, generation) = Self::slot(token);
        match self.entries.get(index) {
            Some((g, Some(value))) if *g == generation => Some(value),
            _ => None,
        }
    }

    /// The value of a live token, mutably.
    pub fn get_mut(&mut self, token: Token) -> Option<&mut T> {
        let (index, generation) = Self::slot(token);
        match self.entries.get_mut(index) {
            Some((g, Some(value))) if *g == generation => Some(value),
            _ => None,
        }
    }

    /// Removes and returns the value of a live token.
    pub fn remove(&mut self, token: Token) -> Option<T> {
        let (index, generation) = Self::slot(token);
        let entry = self.entries.get_mut(index)?;
        if entry.0 != generation {
            return None;
        }
        let value = entry.1.take()?;
        self.free.push(index as u32);
        self.len -= 1;
        Some(value)
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No live entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every live token and value.
    pub fn iter(&self) -> impl Iterator<Item = (Token, &T)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(index, (generation, value))| {
                value
                    .as_ref()
                    .map(|v| ((u64::from(*generation) << 32) | index as u64, v))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_tokens_miss_after_reuse() {
        let mut slots = Slots::default();
        let a = slots.insert("a");
        assert_eq!(slots.remove(a), Some("a"));
        let b = slots.insert("b");
        assert_ne!(a, b);
        assert_eq!(slots.get(a), None);
        assert_eq!(slots.get(b), Some(&"b"));
        assert_eq!(slots.len(), 1);
        assert_eq!(slots.iter().count(), 1);
    }
}
