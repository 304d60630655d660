"""The merge policy (``vdb_grpc.indexing.merge_policy``): which adjacent index segments are merged, on the
projects' row counts alone (no database)."""

from __future__ import annotations

import itertools
from collections import Counter

from vdb_grpc.indexing.merge_policy import HARD_FACTOR, choose_merge, late_minority, merge_must_finish
from vdb_grpc.queries.search import SegmentIndex

EXACT = 4000  # the search's default exact_max_rows
BIG, SIDE, FRESH = 1, 2, 3


def seg(lo: int, hi: int, rows: int) -> SegmentIndex:
    return SegmentIndex(f"embeddings_hnsw_384_{lo}_{hi}", 384, lo, hi, rows, True)


def test_a_project_is_a_late_minority_when_its_rows_come_after_many_others() -> None:
    # the 1M bench: side's 100k rows after 500k of big's -- 0.969 recall in the merged graph, 0.9965 in its own
    assert late_minority(Counter({BIG: 500_000}), Counter({SIDE: 100_000}), EXACT) == SIDE
    assert late_minority(Counter({SIDE: 100_000}), Counter({FRESH: 100_000}), EXACT) == FRESH
    # the same project before and after, or its fresh rows after its own: fine
    assert late_minority(Counter({BIG: 500_000}), Counter({BIG: 500_000}), EXACT) is None
    assert late_minority(Counter({BIG: 1_000_000}), Counter({BIG: 50_000}), EXACT) is None
    # the earlier part is the smaller one (the late project builds most of the graph), or the late project is
    # searched exactly anyway (a few small projects' rows)
    assert late_minority(Counter({BIG: 20_000}), Counter({SIDE: 100_000}), EXACT) is None
    assert late_minority(Counter({BIG: 500_000}), Counter({p: 3000 for p in range(10, 20)}), EXACT) is None


def test_the_bench_layout_keeps_each_projects_rows_in_graphs_of_their_own() -> None:
    comp = {1: {BIG: 250_000}, 2: {BIG: 250_000}, 3: {BIG: 250_000}, 4: {BIG: 250_000}, 5: {SIDE: 100_000}}
    cover = [seg(i, i, 250_000) for i in (1, 2, 3, 4)] + [seg(5, 5, 100_000)]

    def pairs(c: list[SegmentIndex]) -> list[tuple[SegmentIndex, SegmentIndex]]:
        return list(itertools.pairwise(c))

    pick = choose_merge(cover, pairs(cover), comp, 2, EXACT)
    assert pick is not None and (pick[0].lo, pick[1].hi) == (1, 2)  # big's smallest pair, not 4 + side (350k)
    cover = [seg(1, 2, 500_000), seg(3, 3, 250_000), seg(4, 4, 250_000), seg(5, 5, 100_000)]
    pick = choose_merge(cover, pairs(cover), comp, 2, EXACT)
    assert pick is not None and (pick[0].lo, pick[1].hi) == (3, 4)
    cover = [seg(1, 2, 500_000), seg(3, 4, 500_000), seg(5, 5, 100_000)]
    assert choose_merge(cover, pairs(cover), comp, 2, EXACT) is None  # big in 2 graphs, side in its own
    # without the counts: the smallest pair, as before the policy
    pick = choose_merge(cover, pairs(cover), None, 2, EXACT)
    assert pick is not None and (pick[0].lo, pick[1].hi) == (3, 5)


def test_a_project_spread_over_too_many_segments_is_merged_without_mixing() -> None:
    comp = {1: {BIG: 500_000}, 2: {SIDE: 100_000}, 3: {BIG: 60_000}, 4: {BIG: 50_000}}
    cover = [seg(1, 1, 500_000), seg(2, 2, 100_000), seg(3, 3, 60_000), seg(4, 4, 50_000)]
    pairs = list(itertools.pairwise(cover))
    pick = choose_merge(cover, pairs, comp, 2, EXACT)
    assert pick is not None and (pick[0].lo, pick[1].hi) == (3, 4)  # big's fresh pair; never side with big
    comp = {1: {BIG: 500_000}, 2: {SIDE: 100_000}, 3: {BIG: 60_000}}
    cover = cover[:3]
    assert choose_merge(cover, pairs[:2], comp, 1, EXACT) is None  # big in 2 > 1, but side lies between


def test_past_the_hard_limit_the_smallest_pair_is_merged_even_if_it_mixes() -> None:
    n = HARD_FACTOR * 2 + 1
    comp = {i: {100 + i: 10_000} for i in range(1, n + 1)}  # one project per segment: none spread
    cover = [seg(i, i, 10_000 + i) for i in range(1, n + 1)]
    pairs = list(itertools.pairwise(cover))
    pick = choose_merge(cover, pairs, comp, 2, EXACT)
    assert pick is not None and (pick[0].lo, pick[1].hi) == (1, 2)
    assert choose_merge(cover[:-1], pairs[:-1], comp, 2, EXACT) is None  # at the limit: left apart


def test_a_merge_gives_way_unless_its_project_is_spread_over_twice_max_segments() -> None:
    # big's halves merging (its fresh 50k in a third segment), side and a new project apart: four segments, but
    # big is searched through three < 2 x 2, so the merge gives way to the new project's upload
    comp = {1: {BIG: 500_000}, 2: {BIG: 500_000}, 3: {SIDE: 100_000}, 4: {BIG: 50_000}, 5: {FRESH: 5_000}}
    cover = [seg(1, 1, 500_000), seg(2, 2, 500_000), seg(3, 3, 100_000), seg(4, 4, 50_000), seg(5, 5, 5_000)]
    assert not merge_must_finish(cover, 1, 2, comp, 2, EXACT)
    comp = {**comp, 5: {BIG: 5_000}}  # a fourth segment of big: it finishes
    assert merge_must_finish(cover, 1, 2, comp, 2, EXACT)
    assert merge_must_finish(cover, 1, 2, None, 2, EXACT)  # counts unknown: the dimension's 5 >= 4 segments
    assert not merge_must_finish(cover[:3], 1, 2, None, 2, EXACT)
    many = [seg(i, i, 10_000) for i in range(1, HARD_FACTOR * 2 + 2)]
    assert merge_must_finish(many, 1, 2, {i: {100 + i: 10_000} for i in range(1, 10)}, 2, EXACT)  # past the hard limit


def test_no_merge_builds_a_graph_past_the_size_limit_below_the_hard_limit() -> None:
    # run G: big's fresh 50k landed beyond side's segment, and the only clean pair joining big was its two
    # halves: a 1M graph, ten minutes of build, recall@10 0.969 after it (0.996 before)
    comp = {1: {BIG: 500_000}, 2: {BIG: 500_000}, 3: {SIDE: 100_000}, 4: {BIG: 50_000}}
    cover = [seg(1, 1, 500_000), seg(2, 2, 500_000), seg(3, 3, 100_000), seg(4, 4, 50_000)]
    pairs = list(itertools.pairwise(cover))
    pick = choose_merge(cover, pairs, comp, 2, EXACT)
    assert pick is not None and (pick[0].lo, pick[1].hi) == (1, 2)  # without a limit
    assert choose_merge(cover, pairs, comp, 2, EXACT, 500_000) is None  # big keeps three arms
    comp = {**comp, 5: {BIG: 60_000}}
    cover = [*cover, seg(5, 5, 60_000)]
    pick = choose_merge(cover, list(itertools.pairwise(cover)), comp, 2, EXACT, 500_000)
    assert pick is not None and (pick[0].lo, pick[1].hi) == (4, 5)  # big's small neighbours merge
