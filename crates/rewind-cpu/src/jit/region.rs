//! Regions: a hot block compiled together with the blocks of its page that lead back to it,
//! so that a loop runs inside one function, its registers in host registers, instead of
//! leaving and re-entering compiled code at every branch.

use crate::decode::{Kind, Op};
use crate::ram::PAGE_SIZE;

/// One block of a region: where it starts in its page, and its ops.
#[derive(Clone)]
pub(crate) struct RegionBlock {
    pub page_offset: u64,
    pub ops: Vec<Op>,
}

/// Blocks and ops a region may hold: a region's compile time grows with its size, and the
/// loops worth it (string and memory loops, a compressor's match search) fit well within.
const MAX_BLOCKS: usize = 24;
const MAX_OPS: usize = 512;

/// The page offsets where a block at `page_offset` may go next by a direct branch, a direct
/// jump or falling through, within its page.
pub(crate) fn successors(page_offset: u64, ops: &[Op]) -> Vec<u64> {
    use Kind::*;
    let Some(last) = ops.last() else {
        return Vec::new();
    };
    let end = page_offset + ops.iter().map(|op| op.len as u64).sum::<u64>();
    let last_at = end - last.len as u64;
    let targets = match last.kind {
        Beq | Bne | Blt | Bge | Bltu | Bgeu => vec![last_at.wrapping_add(last.imm as u64), end],
        Jal => vec![last_at.wrapping_add(last.imm as u64)],
        kind if crate::hart::ends_block(kind) => Vec::new(),
        _ => vec![end],
    };
    targets.into_iter().filter(|&t| t < PAGE_SIZE).collect()
}

/// The region entered at `entry` (a page offset): that block first, then the blocks `block`
/// knows (decoded, and not refused by the compiler) that can be reached from it within the
/// page and lead back to it, in the order they were found.
pub(crate) fn form(entry: u64, mut block: impl FnMut(u64) -> Option<Vec<Op>>) -> Vec<RegionBlock> {
    let Some(ops) = block(entry) else {
        return Vec::new();
    };
    let mut total_ops = ops.len();
    let mut found = vec![RegionBlock {
        page_offset: entry,
        ops,
    }];
    let mut edges: Vec<Vec<usize>> = Vec::new();
    let mut next = 0;
    while next < found.len() {
        let mut to = Vec::new();
        for target in successors(found[next].page_offset, &found[next].ops) {
            if let Some(known) = found.iter().position(|b| b.page_offset == target) {
                to.push(known);
                continue;
            }
            if found.len() == MAX_BLOCKS {
                continue;
            }
            let Some(ops) = block(target) else {
                continue;
            };
            if total_ops + ops.len() > MAX_OPS {
                continue;
            }
            total_ops += ops.len();
            to.push(found.len());
            found.push(RegionBlock {
                page_offset: target,
                ops,
            });
        }
        edges.push(to);
        next += 1;
    }
    // Keep what leads back to the entry: the rest would be compiled for nothing here.
    let mut keep = vec![false; found.len()];
    keep[0] = true;
    let mut changed = true;
    while changed {
        changed = false;
        for (from, to) in edges.iter().enumerate() {
            if !keep[from] && to.iter().any(|&t| keep[t]) {
                keep[from] = true;
                changed = true;
            }
        }
    }
    found
        .into_iter()
        .zip(keep)
        .filter_map(|(block, keep)| keep.then_some(block))
        .collect()
}

/// Where a region's blocks check the budget, and for how many instructions: `Some(n)` for
/// the entry and every block a jump goes back to (a loop's head), where `n` is the most
/// instructions the region can retire from that block's start before it reaches another
/// such block or leaves. Other blocks need no check of their own, since every path to them
/// passed a head that counted them. Blocks are in the order [`form`] found them, so an edge
/// to an earlier block (or to itself) is the only kind that can close a loop.
pub(crate) fn budget_checks(blocks: &[RegionBlock]) -> Vec<Option<u64>> {
    let index_of = |offset: u64| blocks.iter().position(|b| b.page_offset == offset);
    let edges: Vec<Vec<usize>> = blocks
        .iter()
        .map(|b| {
            successors(b.page_offset, &b.ops)
                .into_iter()
                .filter_map(index_of)
                .collect()
        })
        .collect();
    let mut head = vec![false; blocks.len()];
    if let Some(entry) = head.first_mut() {
        *entry = true;
    }
    for (from, to) in edges.iter().enumerate() {
        for &t in to {
            if t <= from {
                head[t] = true;
            }
        }
    }
    // Longest run from each block's start to a head or an exit, last block first: every
    // edge into a block that is not a head comes from an earlier block.
    let mut reach = vec![0u64; blocks.len()];
    for i in (0..blocks.len()).rev() {
        let onward = edges[i]
            .iter()
            .filter(|&&t| !head[t])
            .map(|&t| reach[t])
            .max()
            .unwrap_or(0);
        reach[i] = blocks[i].ops.len() as u64 + onward;
    }
    head.iter()
        .zip(reach)
        .map(|(&is_head, n)| is_head.then_some(n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::decode;

    /// Decodes 32-bit instruction words into a block.
    fn ops(words: &[u32]) -> Vec<Op> {
        words.iter().map(|&w| decode(w)).collect()
    }

    #[test]
    fn a_loop_through_the_entry_is_kept_and_the_way_out_is_not() {
        // 0x100: addi a0,a0,1; bne a0,a1,+8 (to 0x10c)
        // 0x108: j 0x200 (leaves the loop)
        // 0x10c: j 0x100 (back to the entry)
        let blocks = [
            (0x100, ops(&[0x00150513, 0x00b51463])),
            (0x108, ops(&[0x0f80006f])),
            (0x10c, ops(&[0xff5ff06f])),
            (0x200, ops(&[0x00000073])),
        ];
        let region = form(0x100, |at| {
            blocks
                .iter()
                .find(|(offset, _)| *offset == at)
                .map(|(_, ops)| ops.clone())
        });
        let offsets: Vec<u64> = region.iter().map(|b| b.page_offset).collect();
        assert_eq!(offsets, [0x100, 0x10c]);
    }

    #[test]
    fn only_loop_heads_check_the_budget_for_the_longest_way_to_the_next() {
        // 0x100: lbu a5,0(a0); bne a5,a1,+12 (to 0x110)    the head, 2 instructions
        // 0x108: addi a0,a0,1; j -12 (to 0x100)            2
        // 0x110: addi a2,a2,-1; addi a0,a0,2; bnez a2,-24 (to 0x100, else on to 0x11c)   3
        let blocks = [
            (0x100, ops(&[0x00054783, 0x00b79663])),
            (0x108, ops(&[0x00150513, 0xff5ff06f])),
            (0x110, ops(&[0xfff60613, 0x00250513, 0xfe0614e3])),
        ];
        let region = form(0x100, |at| {
            blocks
                .iter()
                .find(|(offset, _)| *offset == at)
                .map(|(_, ops)| ops.clone())
        });
        assert_eq!(region.len(), 3);
        // From the head: 2, then the longer of the two ways back (3), before the head again.
        assert_eq!(budget_checks(&region), [Some(5), None, None]);
    }
}
