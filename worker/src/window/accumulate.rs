//! Accumulators: the fixed-width slot layout of an analytic's aggregates and its operations.
//!
//! Each key-window (or pane, or session) holds one block of `width` u64 slots in an
//! [`AccArena`]; numbers are stored as f64 bits. Exact distinct counts keep a hash set in a side
//! table, referenced from their slot.

use rustc_hash::FxHashSet;
use tidemark_api::AggregateOp;

use super::codec::{DecodeError, Reader, Writer};
use crate::event::{Event, FieldValue};

/// Where an aggregate reads its input from an event of one source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// The user id.
    User,
    /// The product id.
    Product,
    /// The event type.
    Type,
    /// The category.
    Category,
    /// The price.
    Price,
    /// The event time (epoch ms).
    Time,
    /// Extra or derived field at this index of [`Event::extra`].
    Extra(usize),
}

impl Input {
    /// Reads the input from `event`.
    pub fn read<'e>(self, event: &'e Event<'_>) -> FieldValue<'e> {
        let str_of = |s: &'e Option<std::borrow::Cow<'_, str>>| match s {
            Some(s) => FieldValue::Str(std::borrow::Cow::Borrowed(s.as_ref())),
            None => FieldValue::Null,
        };
        match self {
            Input::User => FieldValue::Str(std::borrow::Cow::Borrowed(event.user.as_ref())),
            Input::Product => str_of(&event.product),
            Input::Type => str_of(&event.event_type),
            Input::Category => str_of(&event.category),
            Input::Price => event.price.map_or(FieldValue::Null, FieldValue::Float),
            Input::Time => FieldValue::Int(event.time),
            Input::Extra(i) => match event.extra.get(i) {
                Some(FieldValue::Str(s)) => FieldValue::Str(std::borrow::Cow::Borrowed(s.as_ref())),
                Some(other) => other.clone(),
                None => FieldValue::Null,
            },
        }
    }
}

/// One aggregate in the layout.
#[derive(Clone, Debug)]
pub struct AggSlot {
    /// Function.
    pub op: AggregateOp,
    /// First slot of its state.
    pub offset: usize,
    /// Input per source index; `None` where events of that source do not count.
    pub inputs: Vec<Option<Input>>,
}

/// A finished value of a result.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    /// A count.
    Int(u64),
    /// A number.
    Float(f64),
    /// No input (min, max or avg of nothing).
    Null,
}

impl Value {
    fn as_f64(self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(i as f64),
            Value::Float(f) => Some(f),
            Value::Null => None,
        }
    }
}

/// Slot layout of an analytic's aggregates, plus per-source event counters used by joins.
#[derive(Clone, Debug)]
pub struct AccLayout {
    /// Aggregates in output order.
    pub aggs: Vec<AggSlot>,
    /// Ratios as (numerator, denominator) aggregate indices, output after the aggregates.
    pub ratios: Vec<(usize, usize)>,
    /// Slot of the event counter per source index, when the analytic needs to know which
    /// sides a key-window has seen (inner and left joins).
    pub side_counters: Vec<Option<usize>>,
    /// Slots per block.
    pub width: usize,
}

impl AccLayout {
    /// A layout for `aggs` (op, inputs per source) over `sources` sources; with
    /// `count_sides`, one counter per source is added.
    pub fn new(
        aggs: Vec<(AggregateOp, Vec<Option<Input>>)>,
        ratios: Vec<(usize, usize)>,
        sources: usize,
        count_sides: bool,
    ) -> Self {
        let mut width = 0;
        let aggs = aggs
            .into_iter()
            .map(|(op, inputs)| {
                let offset = width;
                width += if op == AggregateOp::Avg { 2 } else { 1 };
                AggSlot { op, offset, inputs }
            })
            .collect();
        let side_counters = (0..sources)
            .map(|_| {
                count_sides.then(|| {
                    width += 1;
                    width - 1
                })
            })
            .collect();
        Self {
            aggs,
            ratios,
            side_counters,
            width,
        }
    }

    /// Writes the initial state into `block`.
    pub fn init(&self, block: &mut [u64]) {
        block.fill(0);
        for agg in &self.aggs {
            match agg.op {
                AggregateOp::Min => block[agg.offset] = f64::INFINITY.to_bits(),
                AggregateOp::Max => block[agg.offset] = f64::NEG_INFINITY.to_bits(),
                AggregateOp::Sum => block[agg.offset] = 0f64.to_bits(),
                AggregateOp::Avg => block[agg.offset] = 0f64.to_bits(),
                AggregateOp::Count | AggregateOp::DistinctCount => {}
            }
        }
    }

    /// Adds one event of source `source` to `block`.
    pub fn update(
        &self,
        block: &mut [u64],
        source: usize,
        event: &Event<'_>,
        distinct: &mut DistinctSets,
    ) {
        if let Some(Some(counter)) = self.side_counters.get(source) {
            block[*counter] += 1;
        }
        for agg in &self.aggs {
            let Some(Some(input)) = agg.inputs.get(source) else {
                continue;
            };
            let slot = &mut block[agg.offset..];
            if agg.op == AggregateOp::Count {
                slot[0] += 1;
                continue;
            }
            let value = input.read(event);
            if agg.op == AggregateOp::DistinctCount {
                if let Some(hash) = value_hash(&value) {
                    distinct.insert(&mut slot[0], hash);
                }
                continue;
            }
            let Some(x) = value.as_f64() else { continue };
            let f = f64::from_bits(slot[0]);
            match agg.op {
                AggregateOp::Sum => slot[0] = (f + x).to_bits(),
                AggregateOp::Min => slot[0] = f.min(x).to_bits(),
                AggregateOp::Max => slot[0] = f.max(x).to_bits(),
                AggregateOp::Avg => {
                    slot[0] = (f + x).to_bits();
                    slot[1] += 1;
                }
                AggregateOp::Count | AggregateOp::DistinctCount => unreachable!("handled above"),
            }
        }
    }

    /// Adds the state of `src` into `dst` (merging panes or sessions).
    pub fn merge(&self, dst: &mut [u64], src: &[u64], distinct: &mut DistinctSets) {
        for agg in &self.aggs {
            let (d, s) = (agg.offset, agg.offset);
            let (a, b) = (f64::from_bits(dst[d]), f64::from_bits(src[s]));
            match agg.op {
                AggregateOp::Count => dst[d] += src[s],
                AggregateOp::Sum => dst[d] = (a + b).to_bits(),
                AggregateOp::Min => dst[d] = a.min(b).to_bits(),
                AggregateOp::Max => dst[d] = a.max(b).to_bits(),
                AggregateOp::Avg => {
                    dst[d] = (a + b).to_bits();
                    dst[d + 1] += src[s + 1];
                }
                AggregateOp::DistinctCount => distinct.union_into(&mut dst[d], src[s]),
            }
        }
        for counter in self.side_counters.iter().flatten() {
            dst[*counter] += src[*counter];
        }
    }

    /// Events of source `source` in `block`, when the layout counts sides.
    pub fn side_count(&self, block: &[u64], source: usize) -> Option<u64> {
        self.side_counters
            .get(source)
            .copied()
            .flatten()
            .map(|slot| block[slot])
    }

    /// A copy of `block` with the members of its distinct-count sets (snapshot format 1).
    #[cfg(test)]
    pub fn export(&self, block: &[u64], distinct: &DistinctSets) -> super::snapshot::BlockSnapshot {
        let mut slots = block.to_vec();
        let mut sets = Vec::new();
        for agg in &self.aggs {
            if agg.op == AggregateOp::DistinctCount {
                let slot = &mut slots[agg.offset];
                let mut members: Vec<u64> = match *slot {
                    0 => Vec::new(),
                    index => distinct.sets[(index - 1) as usize]
                        .iter()
                        .copied()
                        .collect(),
                };
                members.sort_unstable();
                sets.push(members);
                *slot = 0;
            }
        }
        super::snapshot::BlockSnapshot { slots, sets }
    }

    /// Writes `snapshot` (format 1) into `block`, recreating its distinct-count sets; false if
    /// the snapshot's block is not of this layout's width.
    pub fn import(
        &self,
        block: &mut [u64],
        snapshot: &super::snapshot::BlockSnapshot,
        distinct: &mut DistinctSets,
    ) -> bool {
        if snapshot.slots.len() != block.len() {
            return false;
        }
        block.copy_from_slice(&snapshot.slots);
        let mut sets = snapshot.sets.iter();
        for agg in &self.aggs {
            if agg.op == AggregateOp::DistinctCount {
                block[agg.offset] = 0;
                if let Some(members) = sets.next().filter(|m| !m.is_empty()) {
                    distinct
                        .set_mut(&mut block[agg.offset])
                        .extend(members.iter().copied());
                }
            }
        }
        true
    }

    /// Appends `block` as a self-contained value (the global stage's partials and its
    /// checkpoints): the width, the slots (a distinct-count slot as 0), then the members of each
    /// distinct-count set in ascending order. [`AccLayout::read_block`] reads it.
    pub fn write_block(&self, block: &[u64], distinct: &DistinctSets, w: &mut Writer) {
        w.len_prefix(block.len());
        let mut members = Vec::new();
        for (i, &slot) in block.iter().enumerate() {
            let is_set = self
                .aggs
                .iter()
                .any(|a| a.op == AggregateOp::DistinctCount && a.offset == i);
            w.u64(if is_set { 0 } else { slot });
        }
        for agg in &self.aggs {
            if agg.op == AggregateOp::DistinctCount {
                members.clear();
                distinct.members_sorted(block[agg.offset], &mut members);
                w.len_prefix(members.len());
                for &m in &members {
                    w.u64(m);
                }
            }
        }
    }

    /// Reads a block written by [`AccLayout::write_block`] into `block` (of this layout's
    /// width), creating its distinct-count sets in `distinct`. Fails on a block of another
    /// width or on truncated bytes, leaving `block` to be released by the caller.
    pub fn read_block(
        &self,
        r: &mut Reader<'_>,
        block: &mut [u64],
        distinct: &mut DistinctSets,
    ) -> Result<(), DecodeError> {
        if r.len_prefix()? != block.len() {
            return Err(DecodeError("an accumulator block of another layout"));
        }
        for slot in block.iter_mut() {
            *slot = r.u64()?;
        }
        let mut members = Vec::new();
        for agg in &self.aggs {
            if agg.op == AggregateOp::DistinctCount {
                block[agg.offset] = 0;
                let n = r.len_prefix()?;
                if n > r.remaining() / 8 {
                    return Err(DecodeError("a distinct-count set longer than its bytes"));
                }
                members.clear();
                for _ in 0..n {
                    members.push(r.u64()?);
                }
                distinct.fill(&mut block[agg.offset], &members);
            }
        }
        Ok(())
    }

    /// Slots of the distinct-count aggregates, in aggregate order.
    pub fn distinct_slots(&self) -> Vec<usize> {
        self.aggs
            .iter()
            .filter(|agg| agg.op == AggregateOp::DistinctCount)
            .map(|agg| agg.offset)
            .collect()
    }

    /// What a snapshot's blocks depend on: width, each aggregate's function and slot, and the
    /// side counters. A snapshot is restored only into a layout with the same signature.
    pub fn signature(&self) -> Vec<i64> {
        let mut out = vec![self.width as i64, self.aggs.len() as i64];
        for agg in &self.aggs {
            let op = match agg.op {
                AggregateOp::Count => 0,
                AggregateOp::Sum => 1,
                AggregateOp::Min => 2,
                AggregateOp::Max => 3,
                AggregateOp::Avg => 4,
                AggregateOp::DistinctCount => 5,
            };
            out.extend([op, agg.offset as i64]);
        }
        out.push(self.side_counters.len() as i64);
        out.extend(
            self.side_counters
                .iter()
                .map(|slot| slot.map_or(-1, |s| s as i64)),
        );
        out
    }

    /// Releases side-table state referenced by `block`.
    pub fn release(&self, block: &mut [u64], distinct: &mut DistinctSets) {
        for agg in &self.aggs {
            if agg.op == AggregateOp::DistinctCount {
                distinct.release(&mut block[agg.offset]);
            }
        }
    }

    /// The finished values of `block`: aggregates, then ratios.
    pub fn finish(&self, block: &[u64], distinct: &DistinctSets, out: &mut Vec<Value>) {
        out.clear();
        for agg in &self.aggs {
            let slot = &block[agg.offset..];
            out.push(match agg.op {
                AggregateOp::Count => Value::Int(slot[0]),
                AggregateOp::Sum => Value::Float(f64::from_bits(slot[0])),
                AggregateOp::Min | AggregateOp::Max => {
                    let f = f64::from_bits(slot[0]);
                    if f.is_finite() {
                        Value::Float(f)
                    } else {
                        Value::Null
                    }
                }
                AggregateOp::Avg if slot[1] == 0 => Value::Null,
                AggregateOp::Avg => Value::Float(f64::from_bits(slot[0]) / slot[1] as f64),
                AggregateOp::DistinctCount => Value::Int(distinct.len(slot[0])),
            });
        }
        for &(num, den) in &self.ratios {
            let ratio = match (out[num].as_f64(), out[den].as_f64()) {
                (Some(n), Some(d)) if d != 0.0 => n / d,
                _ => 0.0,
            };
            out.push(Value::Float(ratio));
        }
    }
}

/// Hash of a value for distinct counting; `None` for absent values.
fn value_hash(value: &FieldValue<'_>) -> Option<u64> {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut h = rustc_hash::FxBuildHasher.build_hasher();
    match value {
        FieldValue::Str(s) => s.as_ref().hash(&mut h),
        FieldValue::Int(i) => i.hash(&mut h),
        FieldValue::Float(f) => f.to_bits().hash(&mut h),
        FieldValue::Bool(b) => b.hash(&mut h),
        FieldValue::Null => return None,
    }
    Some(h.finish())
}

/// Exact distinct-count sets referenced from accumulator slots (0 = empty, else index + 1).
///
/// A copy for a snapshot copies each set: the one part of window state whose copy costs work
/// (and, without an earlier copy to reuse, an allocation) per live set.
#[derive(Debug, Default)]
pub struct DistinctSets {
    sets: Vec<FxHashSet<u64>>,
    free: Vec<usize>,
}

impl DistinctSets {
    fn set_mut(&mut self, slot: &mut u64) -> &mut FxHashSet<u64> {
        if *slot == 0 {
            let index = self.free.pop().unwrap_or_else(|| {
                self.sets.push(FxHashSet::default());
                self.sets.len() - 1
            });
            *slot = index as u64 + 1;
        }
        &mut self.sets[(*slot - 1) as usize]
    }

    fn insert(&mut self, slot: &mut u64, hash: u64) {
        self.set_mut(slot).insert(hash);
    }

    fn union_into(&mut self, dst: &mut u64, src: u64) {
        if src == 0 {
            return;
        }
        let items: Vec<u64> = self.sets[(src - 1) as usize].iter().copied().collect();
        self.set_mut(dst).extend(items);
    }

    fn len(&self, slot: u64) -> u64 {
        if slot == 0 {
            0
        } else {
            self.sets[(slot - 1) as usize].len() as u64
        }
    }

    fn release(&mut self, slot: &mut u64) {
        if *slot != 0 {
            let index = (*slot - 1) as usize;
            self.sets[index] = FxHashSet::default();
            self.free.push(index);
            *slot = 0;
        }
    }

    /// Members of the set referenced by `slot`, appended to `out` in ascending order.
    pub fn members_sorted(&self, slot: u64, out: &mut Vec<u64>) {
        if slot != 0 {
            let at = out.len();
            out.extend(self.sets[(slot - 1) as usize].iter().copied());
            out[at..].sort_unstable();
        }
    }

    /// Makes `slot` (zero) reference a new set of `members`; an empty set stays zero.
    pub fn fill(&mut self, slot: &mut u64, members: &[u64]) {
        *slot = 0;
        if !members.is_empty() {
            self.set_mut(slot).extend(members.iter().copied());
        }
    }

    /// A copy, reusing the sets of `spare` (an earlier copy's) where there are some.
    pub fn copy_into(&self, mut spare: Vec<FxHashSet<u64>>) -> Self {
        spare.truncate(self.sets.len());
        for (copy, set) in spare.iter_mut().zip(&self.sets) {
            copy.clone_from(set);
        }
        let done = spare.len();
        spare.extend(self.sets[done..].iter().cloned());
        Self {
            sets: spare,
            free: self.free.clone(),
        }
    }

    /// The sets, for reuse by [`Self::copy_into`].
    pub fn into_sets(self) -> Vec<FxHashSet<u64>> {
        self.sets
    }

    /// Sets in use.
    pub fn live(&self) -> usize {
        self.sets.len() - self.free.len()
    }
}

/// Blocks per arena chunk.
const BLOCKS_PER_CHUNK: usize = 4_096;

/// Blocks of `width` slots with a free list; a block is named by its index. Blocks live in
/// fixed-size chunks, so growth never copies and never over-reserves, and a copy for a snapshot
/// ([`AccArena::copy_into`]) is one `memcpy` per chunk.
#[derive(Debug)]
pub struct AccArena {
    chunks: Vec<Box<[u64]>>,
    blocks: usize,
    width: usize,
    /// Head of the free list, threaded through the first slot of each free block.
    free: Option<u32>,
    free_count: usize,
}

impl AccArena {
    /// An empty arena of `width`-slot blocks.
    pub fn new(width: usize) -> Self {
        Self {
            chunks: Vec::new(),
            blocks: 0,
            width: width.max(1),
            free: None,
            free_count: 0,
        }
    }

    /// A new block initialised by `layout`.
    pub fn alloc(&mut self, layout: &AccLayout) -> u32 {
        let index = match self.free {
            Some(index) => {
                let next = self.get(index)[0];
                self.free = u32::try_from(next).ok();
                self.free_count -= 1;
                index
            }
            None => {
                if self.blocks.is_multiple_of(BLOCKS_PER_CHUNK) {
                    self.chunks
                        .push(vec![0; BLOCKS_PER_CHUNK * self.width].into_boxed_slice());
                }
                self.blocks += 1;
                u32::try_from(self.blocks - 1).expect("fewer than 2^32 live blocks")
            }
        };
        layout.init(self.get_mut(index));
        index
    }

    /// Returns a block to the free list.
    pub fn free(&mut self, index: u32) {
        let next = self.free.map_or(u64::MAX, u64::from);
        self.get_mut(index)[0] = next;
        self.free = Some(index);
        self.free_count += 1;
    }

    /// The slots of block `index`.
    #[inline]
    pub fn get(&self, index: u32) -> &[u64] {
        let (chunk, block) = (
            index as usize / BLOCKS_PER_CHUNK,
            index as usize % BLOCKS_PER_CHUNK,
        );
        &self.chunks[chunk][block * self.width..(block + 1) * self.width]
    }

    /// The slots of block `index`, mutable.
    #[inline]
    pub fn get_mut(&mut self, index: u32) -> &mut [u64] {
        let (chunk, block) = (
            index as usize / BLOCKS_PER_CHUNK,
            index as usize % BLOCKS_PER_CHUNK,
        );
        &mut self.chunks[chunk][block * self.width..(block + 1) * self.width]
    }

    /// Blocks in use.
    pub fn live(&self) -> usize {
        self.blocks - self.free_count
    }

    /// Bytes held by the arena.
    pub fn bytes(&self) -> usize {
        self.chunks.len() * BLOCKS_PER_CHUNK * self.width * 8
    }

    /// A copy, made of chunks taken from `spare` (an earlier copy's) where they fit.
    pub fn copy_into(&self, spare: &mut Vec<Box<[u64]>>) -> Self {
        let chunks = self
            .chunks
            .iter()
            .map(|chunk| match spare.pop() {
                Some(mut copy) if copy.len() == chunk.len() => {
                    copy.copy_from_slice(chunk);
                    copy
                }
                _ => chunk.clone(),
            })
            .collect();
        Self {
            chunks,
            blocks: self.blocks,
            width: self.width,
            free: self.free,
            free_count: self.free_count,
        }
    }

    /// The chunks, for reuse by [`Self::copy_into`].
    pub fn into_chunks(self) -> Vec<Box<[u64]>> {
        self.chunks
    }
}
