//! Gathering queued work into batches, the one rule behind group commit,
//! batched forwarding and batched read-index rounds: whatever is queued when
//! a batch is taken goes together, up to a count and a byte bound; work that
//! arrives while a batch is in flight waits for the next one.

use tokio::sync::mpsc;

/// Work that knows its size on the wire.
pub trait Weigh {
    /// Approximate encoded bytes.
    fn bytes(&self) -> usize;
}

/// A queue's receiving end, with the item that did not fit the last batch.
pub struct Gather<T> {
    rx: mpsc::Receiver<T>,
    carry: Option<T>,
    max_items: usize,
    max_bytes: usize,
}

impl<T: Weigh> Gather<T> {
    /// Batches from `rx` of at most `max_items` (at least 1) and `max_bytes`
    /// (one item goes whatever its size).
    pub fn new(rx: mpsc::Receiver<T>, max_items: usize, max_bytes: usize) -> Self {
        Gather {
            rx,
            carry: None,
            max_items: max_items.max(1),
            max_bytes,
        }
    }

    /// Waits for work, then takes everything queued that fits. Empty once
    /// every sender is gone and the queue is drained.
    pub async fn next(&mut self) -> Vec<T> {
        let first = match self.carry.take() {
            Some(item) => item,
            None => match self.rx.recv().await {
                Some(item) => item,
                None => return Vec::new(),
            },
        };
        let mut bytes = first.bytes();
        let mut batch = vec![first];
        while batch.len() < self.max_items {
            let Ok(next) = self.rx.try_recv() else { break };
            let size = next.bytes();
            if bytes + size > self.max_bytes {
                self.carry = Some(next);
                break;
            }
            bytes += size;
            batch.push(next);
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Item(usize);
    impl Weigh for Item {
        fn bytes(&self) -> usize {
            self.0
        }
    }

    #[tokio::test]
    async fn a_batch_takes_what_is_queued_within_its_bounds() {
        let (tx, rx) = mpsc::channel(16);
        let mut gather = Gather::new(rx, 3, 10);
        for size in [4, 4, 4, 1, 1, 1, 1] {
            tx.send(Item(size))
                .await
                .unwrap_or_else(|_| panic!("queue closed"));
        }
        let sizes = |b: Vec<Item>| b.into_iter().map(|i| i.0).collect::<Vec<_>>();
        assert_eq!(sizes(gather.next().await), [4, 4], "bytes bound: the third waits");
        assert_eq!(sizes(gather.next().await), [4, 1, 1], "count bound");
        assert_eq!(sizes(gather.next().await), [1, 1]);
        drop(tx);
        assert!(gather.next().await.is_empty());
        let (tx, rx) = mpsc::channel(4);
        let mut gather = Gather::new(rx, 8, 10);
        tx.send(Item(50)).await.unwrap_or_else(|_| panic!("queue closed"));
        assert_eq!(sizes(gather.next().await), [50], "an oversized item goes alone");
    }
}
