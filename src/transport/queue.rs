//! A byte queue for sans-IO code that writes into `&mut [u8]` (rustls'
//! unbuffered API, socket reads): bytes are appended at the back and taken
//! from the front, the room behind them stays initialised between uses (so
//! appending never zero-fills twice), and an empty queue can hand its
//! memory back, which is what lets an idle TLS connection hold no buffers.

/// Queued bytes are `data[start..end]`; `data[end..]` is initialised room.
#[derive(Debug, Default)]
pub struct ByteQueue {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl ByteQueue {
    pub const fn new() -> ByteQueue {
        ByteQueue {
            data: Vec::new(),
            start: 0,
            end: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The queued bytes.
    pub fn bytes(&self) -> &[u8] {
        self.data.get(self.start..self.end).unwrap_or_default()
    }

    /// The queued bytes, writable (rustls decrypts records in place).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        self.data.get_mut(self.start..self.end).unwrap_or_default()
    }

    /// Room for at least `min` more bytes after the queued ones; fill a
    /// prefix of it and [`ByteQueue::commit`] what was filled.
    pub fn room(&mut self, min: usize) -> &mut [u8] {
        if self.data.len() - self.end < min && self.start > 0 {
            // Move the queued bytes to the front before growing.
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let wanted = self.end.saturating_add(min);
        if self.data.len() < wanted {
            self.data.resize(wanted, 0);
        }
        self.data.get_mut(self.end..).unwrap_or_default()
    }

    /// Queues the first `n` bytes of the last [`ByteQueue::room`].
    pub fn commit(&mut self, n: usize) {
        self.end = self.end.saturating_add(n).min(self.data.len());
    }

    pub fn extend(&mut self, bytes: &[u8]) {
        let room = self.room(bytes.len());
        if let Some(target) = room.get_mut(..bytes.len()) {
            target.copy_from_slice(bytes);
            self.commit(bytes.len());
        }
    }

    /// Drops `n` bytes from the front.
    pub fn consume(&mut self, n: usize) {
        self.start = self.start.saturating_add(n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Frees the memory if nothing is queued.
    pub fn release_if_empty(&mut self) {
        if self.is_empty() {
            self.data = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ByteQueue;

    #[test]
    fn bytes_come_out_in_order_across_growth_and_compaction() {
        let mut queue = ByteQueue::default();
        queue.extend(b"hello ");
        queue.consume(2);
        let room = queue.room(100);
        assert!(room.len() >= 100);
        room[..5].copy_from_slice(b"world");
        queue.commit(5);
        assert_eq!(queue.bytes(), b"llo world");
        queue.consume(4);
        queue.extend(&[b'!'; 200]);
        assert_eq!(queue.len(), 205);
        assert_eq!(&queue.bytes()[..5], b"world");
        queue.consume(1000);
        assert!(queue.is_empty());
        assert!(queue.data.capacity() > 0);
        queue.release_if_empty();
        assert_eq!(queue.data.capacity(), 0);
    }

    #[test]
    fn a_queue_with_bytes_keeps_them_when_asked_to_release() {
        let mut queue = ByteQueue::default();
        queue.extend(b"partial record");
        queue.release_if_empty();
        assert_eq!(queue.bytes(), b"partial record");
        queue.commit(1_000_000);
        assert_eq!(queue.len(), queue.bytes().len(), "commit stays in bounds");
    }
}
