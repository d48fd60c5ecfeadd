//! A vector in fixed-size chunks: growing never copies and never reserves more than one chunk
//! ahead, so state memory follows live state instead of the next power of two. Copying one of
//! `Copy` elements ([`ChunkedVec::copy_into`]) is one `memcpy` per chunk, into chunks of an
//! earlier copy where there are some.

/// Elements per chunk.
const CHUNK: usize = 4_096;

/// A growable array stored in chunks of [`CHUNK`] elements.
#[derive(Debug)]
pub struct ChunkedVec<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for ChunkedVec<T> {
    fn default() -> Self {
        Self {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T> ChunkedVec<T> {
    /// Appends `value`; returns its index.
    pub fn push(&mut self, value: T) -> usize {
        if self.len.is_multiple_of(CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        self.chunks
            .last_mut()
            .expect("a chunk was just ensured")
            .push(value);
        self.len += 1;
        self.len - 1
    }

    /// The element at `index`.
    #[inline]
    pub fn get(&self, index: usize) -> &T {
        &self.chunks[index / CHUNK][index % CHUNK]
    }

    /// The element at `index`, mutable.
    #[inline]
    pub fn get_mut(&mut self, index: usize) -> &mut T {
        &mut self.chunks[index / CHUNK][index % CHUNK]
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes reserved.
    pub fn bytes(&self) -> usize {
        self.chunks.len() * CHUNK * std::mem::size_of::<T>()
            + self.chunks.capacity() * std::mem::size_of::<Vec<T>>()
    }
}

impl<T: Copy> ChunkedVec<T> {
    /// A copy, made of chunks taken from `spare` (an earlier copy's, see [`Self::into_chunks`])
    /// where there are some, so that it is written into memory that is already mapped.
    pub fn copy_into(&self, spare: &mut Vec<Vec<T>>) -> Self {
        let chunks = self
            .chunks
            .iter()
            .map(|chunk| {
                let mut copy = spare.pop().unwrap_or_default();
                copy.clear();
                copy.reserve_exact(CHUNK);
                copy.extend_from_slice(chunk);
                copy
            })
            .collect();
        Self {
            chunks,
            len: self.len,
        }
    }

    /// The chunks, for reuse by [`Self::copy_into`].
    pub fn into_chunks(self) -> Vec<Vec<T>> {
        self.chunks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_stay_valid_across_chunks() {
        let mut v = ChunkedVec::default();
        for i in 0..(CHUNK * 2 + 5) {
            assert_eq!(v.push(i), i);
        }
        *v.get_mut(CHUNK + 1) = 7;
        assert_eq!(*v.get(CHUNK + 1), 7);
        assert_eq!(*v.get(CHUNK * 2 + 4), CHUNK * 2 + 4);
        assert_eq!(v.len(), CHUNK * 2 + 5);
        let mut spare = vec![vec![1; 3]];
        let copy = v.copy_into(&mut spare);
        assert!(spare.is_empty());
        assert_eq!(*copy.get(CHUNK + 1), 7);
        assert_eq!(*copy.get(CHUNK * 2 + 4), CHUNK * 2 + 4);
        assert_eq!(copy.len(), v.len());
        let mut spare = copy.into_chunks();
        assert_eq!(spare.len(), 3);
        *v.get_mut(0) = 9;
        assert_eq!(*v.copy_into(&mut spare).get(0), 9);
    }
}
