//! Tests of the checker: simulated images against simulated logs.

use std::collections::HashSet;

use super::*;
use crate::log::Run;
use crate::prng::XorShift64Star;
use crate::scan::Defect;
use crate::stamp::{target_block, Stamp};

const BLOCK_SIZE: usize = 512;

fn geometry(blocks: u64) -> Geometry {
    Geometry::new(BLOCK_SIZE, blocks).unwrap()
}

fn run(first: u64, count: usize, seed: u64, blocks: u64, jobs: usize) -> Run {
    Run {
        first,
        count: count as u64,
        seed,
        block_size: BLOCK_SIZE,
        blocks,
        jobs,
    }
}

/// Adds a run whose writes have the given (issued, completed) events.
fn push_run(log: &mut Log, run: Run, events: &[(u64, u64)]) {
    let writes = events
        .iter()
        .zip(run.first..)
        .map(|(&(issued, completed), number)| WriteRecord {
            number,
            block: target_block(run.seed, number, run.blocks),
            issued,
            completed,
        })
        .collect();
    log.push_run(run, writes).unwrap();
}

/// Events of `count` writes issued one after another, after event `base`.
fn sequential_events(count: usize, base: u64) -> Vec<(u64, u64)> {
    (0..count as u64)
        .map(|i| (base + 2 * i + 1, base + 2 * i + 2))
        .collect()
}

fn log_of(seed: u64, blocks: u64, jobs: usize, events: &[(u64, u64)]) -> Log {
    let mut log = Log::default();
    push_run(&mut log, run(1, events.len(), seed, blocks, jobs), events);
    log
}

fn sequential_log(seed: u64, blocks: u64, count: usize) -> Log {
    log_of(seed, blocks, 1, &sequential_events(count, 0))
}

/// A seed whose writes 1, 2, … go to `targets`, for handcrafted logs.
fn seed_sending(targets: &[u64], blocks: u64) -> u64 {
    (0..)
        .find(|&seed| {
            (1..)
                .zip(targets)
                .all(|(n, &b)| target_block(seed, n, blocks) == b)
        })
        .unwrap()
}

fn stamp_of(log: &Log, number: u64) -> Stamp {
    Stamp {
        number,
        block: log.get(number).unwrap().block,
        seed: log.run_of(number).unwrap().seed,
    }
}

fn block_mut(image: &mut [u8], block: u64) -> &mut [u8] {
    let at = block as usize * BLOCK_SIZE;
    &mut image[at..at + BLOCK_SIZE]
}

/// A zeroed device after applying writes `numbers` in that order.
fn image_after(log: &Log, blocks: u64, numbers: impl IntoIterator<Item = u64>) -> Vec<u8> {
    let mut image = vec![0u8; blocks as usize * BLOCK_SIZE];
    for number in numbers {
        let stamp = stamp_of(log, number);
        stamp.fill(block_mut(&mut image, stamp.block));
    }
    image
}

/// An image whose block b holds write `held[b]` (0: zeroes).
fn image_holding(log: &Log, held: &[u64]) -> Vec<u8> {
    for (b, &n) in held.iter().enumerate() {
        assert!(
            n == 0 || log.get(n).unwrap().block == b as u64,
            "write {n} is not to {b}"
        );
    }
    image_after(
        log,
        held.len() as u64,
        held.iter().copied().filter(|&n| n != 0),
    )
}

fn verdict(log: &Log, blocks: u64, image: &[u8]) -> Verdict {
    check(&mut &image[..], log, geometry(blocks)).unwrap()
}

fn defects_of(verdict: &Verdict) -> Vec<BlockDefect> {
    match verdict {
        Verdict::Damaged { defects, .. } => defects.clone(),
        other => panic!("expected damaged blocks, got: {other}"),
    }
}

fn stale_blocks(verdict: &Verdict) -> Vec<u64> {
    match verdict {
        Verdict::Reordered { reordering, .. } => reordering.stale.iter().map(|s| s.block).collect(),
        other => panic!("expected a reordering, got: {other}"),
    }
}

fn assert_prefix(verdict: &Verdict, p: u64, w: u64) {
    let Verdict::Consistent(cut) = verdict else {
        panic!("prefix {p}: {verdict}");
    };
    assert!(cut.sequential);
    assert_eq!(cut.prefix_end(), p, "{verdict}");
    let expected = format!("ok: image is the state after write {p} of {w} (prefix: ");
    assert!(verdict.to_string().starts_with(&expected), "{verdict}");
}

#[test]
fn every_prefix_is_accepted_as_itself() {
    let (blocks, count) = (16, 300);
    let log = sequential_log(7, blocks, count);
    for p in 0..=count as u64 {
        let image = image_after(&log, blocks, 1..=p);
        assert_prefix(&verdict(&log, blocks, &image), p, count as u64);
    }
}

#[test]
fn prefixes_span_runs_with_different_seeds() {
    let blocks = 16;
    let mut log = Log::default();
    push_run(
        &mut log,
        run(1, 40, 7, blocks, 1),
        &sequential_events(40, 0),
    );
    push_run(&mut log, run(41, 40, 9, 8, 1), &sequential_events(40, 80));
    for p in 0..=80 {
        let image = image_after(&log, blocks, 1..=p);
        assert_prefix(&verdict(&log, blocks, &image), p, 80);
    }
}

/// Write `j` to block b, which has an earlier write, with no write to b in `j+1..=j+gap`.
fn overwrite_followed_elsewhere(log: &Log, gap: u64) -> u64 {
    let block = |n| log.get(n).unwrap().block;
    (2..)
        .find(|&j| {
            (1..j).any(|m| block(m) == block(j)) && (j + 1..=j + gap).all(|k| block(k) != block(j))
        })
        .unwrap()
}

#[test]
fn older_stamp_beside_newer_blocks_is_a_reordering() {
    let (blocks, count) = (16, 300);
    let log = sequential_log(7, blocks, count);
    let j = overwrite_followed_elsewhere(&log, 20);
    let image = image_after(&log, blocks, (1..=j + 20).filter(|&n| n != j));
    let verdict = verdict(&log, blocks, &image);
    let b = log.get(j).unwrap().block;
    assert_eq!(stale_blocks(&verdict), vec![b]);
    let Verdict::Reordered { reordering, .. } = &verdict else {
        unreachable!()
    };
    assert_eq!(reordering.stale[0].missed.number, j);
    assert!(reordering.stale[0].holds.unwrap().number < j);
    assert!(reordering.newest.number > j);
    let text = verdict.to_string();
    assert!(
        text.starts_with("violation: no prefix of the 300 logged writes"),
        "{text}"
    );
    assert!(
        text.contains(&format!("\nviolation: block {b} holds write ")),
        "{text}"
    );
}

#[test]
fn zeroed_block_beside_newer_blocks_is_a_reordering() {
    let (blocks, count) = (16, 300);
    let log = sequential_log(7, blocks, count);
    let first_write_to_block = (1..).find(|&n| log.get(n).unwrap().block == 3).unwrap();
    let image = image_after(
        &log,
        blocks,
        (1..=count as u64).filter(|&n| log.get(n).unwrap().block != 3),
    );
    let verdict = verdict(&log, blocks, &image);
    assert_eq!(stale_blocks(&verdict), vec![3]);
    let Verdict::Reordered { reordering, .. } = &verdict else {
        unreachable!()
    };
    assert_eq!(reordering.stale[0].holds, None);
    assert_eq!(reordering.stale[0].missed.number, first_write_to_block);
}

#[test]
fn torn_blocks_are_damaged() {
    let (blocks, count) = (16, 300);
    let log = sequential_log(7, blocks, count);
    let mut image = image_after(&log, blocks, 1..=count as u64);
    let held = |n: u64| {
        (1..=n)
            .rev()
            .find(|&m| log.get(m).unwrap().block == 5)
            .unwrap()
    };
    let (newer, older) = (held(count as u64), held(held(count as u64) - 1));
    // The second half of block 5 still holds the previous write to it.
    let mut previous = vec![0u8; BLOCK_SIZE];
    stamp_of(&log, older).fill(&mut previous);
    block_mut(&mut image, 5)[BLOCK_SIZE / 2..].copy_from_slice(&previous[BLOCK_SIZE / 2..]);
    // Block 6 only got the first sector of its newest write... and the rest is zeroes.
    block_mut(&mut image, 6)[BLOCK_SIZE / 2..].fill(0);
    let defects = defects_of(&verdict(&log, blocks, &image));
    assert_eq!(defects.len(), 2, "{defects:?}");
    for (found, block) in defects.iter().zip([5, 6]) {
        assert_eq!(found.block, block);
        let Defect::Mismatch { number, offset } = found.defect else {
            panic!("{found:?}");
        };
        assert!(
            (BLOCK_SIZE / 2..BLOCK_SIZE / 2 + 8).contains(&offset),
            "{offset}"
        );
        assert!(block != 5 || number == newer);
    }
}

#[test]
fn stamp_of_a_write_to_another_block_is_damage() {
    let (blocks, count) = (16, 300);
    let log = sequential_log(7, blocks, count);
    let mut image = image_after(&log, blocks, 1..=count as u64);
    let copy = block_mut(&mut image, 9).to_vec();
    block_mut(&mut image, 2).copy_from_slice(&copy);
    let number = Stamp::parse_header(&copy).unwrap().number;
    let defects = defects_of(&verdict(&log, blocks, &image));
    assert_eq!(
        defects,
        vec![BlockDefect {
            block: 2,
            defect: Defect::WrongBlock { number, target: 9 }
        }]
    );
}

#[test]
fn garbage_is_damage() {
    let (blocks, count) = (16, 100);
    let log = sequential_log(7, blocks, count);
    let mut image = image_after(&log, blocks, 1..=50);
    block_mut(&mut image, 4).fill(0xa5);
    block_mut(&mut image, 11).fill(0);
    block_mut(&mut image, 11)[300] = 1;
    let defects = defects_of(&verdict(&log, blocks, &image));
    assert_eq!(
        defects.iter().map(|d| d.block).collect::<Vec<_>>(),
        vec![4, 11]
    );
    assert!(defects.iter().all(|d| d.defect == Defect::Garbage));
}

#[test]
fn future_write_number_is_damage() {
    let (blocks, count) = (16, 100);
    let log = sequential_log(7, blocks, count);
    let mut image = image_after(&log, blocks, 1..=count as u64);
    let future = Stamp {
        number: count as u64 + 5,
        block: target_block(7, count as u64 + 5, blocks),
        seed: 7,
    };
    future.fill(block_mut(&mut image, future.block));
    let defects = defects_of(&verdict(&log, blocks, &image));
    assert_eq!(
        defects,
        vec![BlockDefect {
            block: future.block,
            defect: Defect::NotLogged { number: 105 }
        }]
    );
}

#[test]
fn reports_name_at_most_ten_blocks() {
    let blocks = 16;
    let log = sequential_log(7, blocks, 10);
    let mut image = image_after(&log, blocks, 1..=10);
    for b in 2..15 {
        block_mut(&mut image, b).fill(0xff);
    }
    let verdict = verdict(&log, blocks, &image);
    let text = verdict.to_string();
    assert_eq!(defects_of(&verdict).len(), 10);
    assert!(text.starts_with("violation: 13 of 16 blocks"), "{text}");
    assert_eq!(text.lines().count(), 12, "{text}");
    assert!(text.ends_with("… and 3 more blocks"), "{text}");
}

#[test]
fn concurrent_writes_to_one_block_may_land_in_either_order() {
    // Writes 1 and 2 to block 0 overlap; write 3 to block 1 starts after both completed.
    let seed = seed_sending(&[0, 0, 1], 2);
    let log = log_of(seed, 2, 2, &[(1, 4), (2, 3), (5, 6)]);
    for held in [[0, 0], [1, 0], [2, 0], [1, 3], [2, 3]] {
        let verdict = verdict(&log, 2, &image_holding(&log, &held));
        assert!(verdict.is_consistent(), "{held:?}: {verdict}");
    }
    let verdict = verdict(&log, 2, &image_holding(&log, &[0, 3]));
    assert_eq!(stale_blocks(&verdict), vec![0]);
    let text = verdict.to_string();
    assert!(text.contains("block 0 holds zeroes, but write 2 to it completed (event 3) before write 3 was issued (event 5)"), "{text}");
}

#[test]
fn writes_in_flight_at_the_cut_may_go_either_way() {
    // Write 1 (block 0) is in flight throughout; 2 (block 1) completes before 3 (block 2).
    let seed = seed_sending(&[0, 1, 2], 3);
    let log = log_of(seed, 3, 2, &[(1, 10), (2, 3), (4, 5)]);
    for held in [[0, 2, 3], [1, 0, 0], [1, 2, 0], [0, 2, 0], [1, 2, 3]] {
        let verdict = verdict(&log, 3, &image_holding(&log, &held));
        assert!(verdict.is_consistent(), "{held:?}: {verdict}");
        assert!(verdict.to_string().contains("concurrent log"), "{verdict}");
    }
    let verdict = verdict(&log, 3, &image_holding(&log, &[0, 0, 3]));
    assert_eq!(stale_blocks(&verdict), vec![1]);
}

#[test]
fn an_excluded_write_excludes_everything_issued_after_it_completed() {
    // Sequential: {1, 3} without 2 is not a cut, although 2 completed after 1.
    let seed = seed_sending(&[0, 1, 2], 3);
    let log = log_of(seed, 3, 1, &sequential_events(3, 0));
    assert_eq!(
        stale_blocks(&verdict(&log, 3, &image_holding(&log, &[1, 0, 3]))),
        vec![1]
    );
}

/// (issued, completed) events of `count` writes with at most `jobs` in flight at once.
fn random_events(rng: &mut XorShift64Star, count: usize, jobs: usize) -> Vec<(u64, u64)> {
    let mut events = vec![(0, 0); count];
    let (mut in_flight, mut next, mut clock) = (Vec::new(), 0, 1);
    while next < count || !in_flight.is_empty() {
        let may_issue = next < count && in_flight.len() < jobs;
        if may_issue && (in_flight.is_empty() || rng.next_u64().is_multiple_of(2)) {
            events[next].0 = clock;
            in_flight.push(next);
            next += 1;
        } else {
            let pick = (rng.next_u64() % in_flight.len() as u64) as usize;
            events[in_flight.swap_remove(pick)].1 = clock;
        }
        clock += 1;
    }
    events
}

/// Every image the model allows, by brute force from its definition: S downward closed
/// under "completed before issued", each block holding a write of S to it that no other
/// write of S to it was issued after.
fn reachable(log: &Log, blocks: u64) -> HashSet<Vec<u64>> {
    let writes = log.writes();
    let mut states = HashSet::new();
    for mask in 0u32..1 << writes.len() {
        let in_s = |i: usize| mask >> i & 1 == 1;
        let closed = (0..writes.len()).all(|x| {
            !in_s(x) || (0..writes.len()).all(|y| in_s(y) || writes[y].completed > writes[x].issued)
        });
        if !closed {
            continue;
        }
        let options: Vec<Vec<u64>> = (0..blocks)
            .map(|b| {
                let members: Vec<_> = (0..writes.len())
                    .filter(|&i| in_s(i) && writes[i].block == b)
                    .map(|i| writes[i])
                    .collect();
                if members.is_empty() {
                    return vec![0];
                }
                members
                    .iter()
                    .filter(|x| members.iter().all(|y| y.issued < x.completed))
                    .map(|x| x.number)
                    .collect()
            })
            .collect();
        for_each_choice(&options, &mut |choice| {
            states.insert(choice.to_vec());
        });
    }
    states
}

fn for_each_choice(options: &[Vec<u64>], visit: &mut impl FnMut(&[u64])) {
    fn go(options: &[Vec<u64>], chosen: &mut Vec<u64>, visit: &mut impl FnMut(&[u64])) {
        match options.split_first() {
            None => visit(chosen),
            Some((first, rest)) => {
                for &option in first {
                    chosen.push(option);
                    go(rest, chosen, visit);
                    chosen.pop();
                }
            }
        }
    }
    go(options, &mut Vec::new(), visit);
}

#[test]
fn cut_search_agrees_with_brute_force() {
    let mut rng = XorShift64Star::new(2024);
    let (mut accepted, mut rejected) = (0, 0);
    for seed in 0..300 {
        let blocks = 1 + rng.next_u64() % 3;
        let count = 1 + (rng.next_u64() % 7) as usize;
        let jobs = 1 + (rng.next_u64() % 3) as usize;
        let log = log_of(seed, blocks, jobs, &random_events(&mut rng, count, jobs));
        let allowed = reachable(&log, blocks);
        let prefixes: Vec<Vec<u64>> = (0..=count as u64)
            .map(|p| {
                let mut state = vec![0; blocks as usize];
                (1..=p).for_each(|n| state[log.get(n).unwrap().block as usize] = n);
                state
            })
            .collect();
        // Every candidate: each block zero or any logged write to it.
        let options: Vec<Vec<u64>> = (0..blocks)
            .map(|b| {
                let to_b = log
                    .writes()
                    .iter()
                    .filter(|w| w.block == b)
                    .map(|w| w.number);
                std::iter::once(0).chain(to_b).collect()
            })
            .collect();
        for_each_choice(&options, &mut |held| {
            let contents: Vec<_> = held.iter().map(|&n| log.get(n).copied()).collect();
            let found = feasible_cut(&log, &contents);
            assert_eq!(
                found.is_ok(),
                allowed.contains(held),
                "{held:?} {:?}",
                log.writes()
            );
            if let Ok(cut) = found {
                accepted += 1;
                if cut.sequential {
                    assert_eq!(prefixes[cut.prefix_end() as usize], held, "{held:?}");
                }
            } else {
                rejected += 1;
                assert!(!(jobs == 1 && prefixes.iter().any(|p| p == held)));
            }
        });
    }
    assert!(
        accepted > 500 && rejected > 500,
        "{accepted} accepted, {rejected} rejected"
    );
}

#[test]
fn large_concurrent_log_is_checked_quickly() {
    let (blocks, count) = (65_536, 100_000);
    let mut rng = XorShift64Star::new(5);
    let log = log_of(3, blocks, 8, &random_events(&mut rng, count, 8));
    // Everything applied in completion order: the state after the whole log.
    let mut by_completion: Vec<_> = log.writes().to_vec();
    by_completion.sort_by_key(|w| w.completed);
    let mut contents = vec![None; blocks as usize];
    for w in by_completion {
        contents[w.block as usize] = Some(w);
    }
    let started = std::time::Instant::now();
    let cut = feasible_cut(&log, &contents).unwrap();
    assert_eq!((cut.before_event, cut.completed), (None, count as u64));
    assert!(started.elapsed().as_secs() < 5);
}
