"""Which two adjacent index segments of a dimension the indexer merges, if any (``choose_merge``).

A merge builds one HNSW graph over both label ranges, inserting the rows in heap order: the earlier segment's
rows first. That is harmless when both hold the same projects' rows, and harmful when a project's rows come
*late into a graph of other projects' rows*: an HNSW graph grows its long links while it is small, and rows
that arrive after a large, different population mostly link into it one way (the earlier nodes' neighbour
lists are full of nearer nodes), so their region is hard to reach from the entry point whatever ``ef_search``.
Measured (bench/scale.py at 1M x 384, docs/benchmarks.md): a 100k project whose segment had been merged after a
500k segment of another project searched at recall@10 0.969 (0.9785 at ef_search 400, and 4.3-5.0 ms) where its
own graph gave 0.9965 (2.8 ms) -- and clustered rows of different embedding models of one width look just like
that. Such a merge is *mixing* (``late_minority``) and is not done.

Merges are what bounds the HNSW arms of one project's searches: a merge is due when some project is
*significant* (would get an HNSW arm: ``significant``) in more than ``max_segments`` index segments; then the
smallest adjacent non-mixing pair in which such a project is significant on both sides is merged -- if the
merged graph would hold at most ``max_rows`` rows (the indexer: twice ``seal_max_rows``, 500k by default): a
larger graph searches *worse* at the same ef_search (bench/layout.py: one 1M graph 0.983 recall@10 at ef 150,
two 500k graphs 0.9965; bench/scale.py run G: 0.969 after a 1M merge of big's halves, 0.996 before) and costs
ten minutes of build. Segments of different projects are left apart: another project's segment costs a search
one exact arm over none of its rows.
Only when a dimension has more than ``HARD_FACTOR`` x ``max_segments`` index segments (every search plans and
reads more arms, the planner weighs more partial indexes) is the smallest pair merged whatever it mixes, as
before. Without the projects' row counts (``composition`` None) the smallest pair is merged, as before.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from vdb_grpc.queries.search import SegmentIndex

#: A project with more than ``exact_max_rows`` rows in a segment (the search's setting, default 4000), and at
#: least 1/``SIGNIFICANT_SHARE_DIVISOR`` of it, is searched there through the index (``domain.search.Search``'s
#: min_share_divisor).
SIGNIFICANT_SHARE_DIVISOR = 50
#: A dimension with more than this many times ``max_segments`` index segments has its smallest pair merged even
#: if that mixes projects.
HARD_FACTOR = 4

#: Per segment label: rows per project id.
Composition = Mapping[int, Mapping[int, int]]


def rows_in(lo: int, hi: int, composition: Composition) -> Counter[int]:
    """Rows per project in the labels ``lo``..``hi``."""
    total: Counter[int] = Counter()
    for label, projects in composition.items():
        if lo <= label <= hi:
            total.update(projects)
    return total


def rows_by_project(segment: SegmentIndex, composition: Composition) -> Counter[int]:
    """Rows per project in ``segment``'s label range."""
    return rows_in(segment.lo, segment.hi, composition)


def significant(rows: int, segment_rows: int, exact_max_rows: int) -> bool:
    """Whether a project with ``rows`` rows in a segment of ``segment_rows`` is searched there by its index."""
    return rows > max(exact_max_rows, segment_rows // SIGNIFICANT_SHARE_DIVISOR)


def late_minority(earlier: Counter[int], later: Counter[int], exact_max_rows: int) -> int | None:
    """A project whose rows would come late into a graph of other projects' rows if the segments holding
    ``earlier`` and ``later`` (rows per project) were merged, else None.

    That is a project significant in the merged segment with more rows in the later part than in the earlier
    one, while the earlier part holds at least a quarter as many rows of other projects as its late rows.
    """
    total = sum(earlier.values()) + sum(later.values())
    before = sum(earlier.values())
    for project, late in later.items():
        early = earlier.get(project, 0)
        if significant(early + late, total, exact_max_rows) and early < late and before - early >= late // 4:
            return project
    return None


def spread_of(cover: Sequence[SegmentIndex], composition: Composition, exact_max_rows: int) -> Counter[int]:
    """Per project: the index segments of ``cover`` its searches read through the index."""
    spread: Counter[int] = Counter()
    for s in cover:
        for project, rows in rows_by_project(s, composition).items():
            if significant(rows, s.rows, exact_max_rows):
                spread[project] += 1
    return spread


def merge_must_finish(
    cover: Sequence[SegmentIndex],
    lo: int,
    hi: int,
    composition: Composition | None,
    max_segments: int,
    exact_max_rows: int,
) -> bool:
    """Whether a running merge of labels ``lo``..``hi`` goes on rather than giving way to fresh work: when a
    project it joins is already searched through twice ``max_segments`` segments, or the dimension is past the
    hard limit -- under a steady stream of fresh segments merges that always gave way would never finish, and
    searches would read ever more arms. Without the projects' rows: when the dimension has twice
    ``max_segments`` segments (the rule before the merge policy)."""
    if len(cover) > HARD_FACTOR * max_segments:
        return True
    if composition is None:
        return len(cover) >= 2 * max_segments
    spread = spread_of(cover, composition, exact_max_rows)
    joined = [p for p, rows in rows_in(lo, hi, composition).items() if rows > exact_max_rows]
    return any(spread[p] >= 2 * max_segments for p in joined)


def choose_merge(
    cover: Sequence[SegmentIndex],
    pairs: Sequence[tuple[SegmentIndex, SegmentIndex]],
    composition: Composition | None,
    max_segments: int,
    exact_max_rows: int,
    max_rows: int | None = None,
) -> tuple[SegmentIndex, SegmentIndex] | None:
    """The adjacent pair of ``cover`` (among the allowed ``pairs``) to merge now, or None (see the module
    docstring; ``max_rows`` None: no size limit)."""
    if not pairs or len(cover) <= max_segments:
        return None

    def size(p: tuple[SegmentIndex, SegmentIndex]) -> int:
        return p[0].rows + p[1].rows

    if composition is None:
        return min(pairs, key=size)
    parts = {s.name: rows_by_project(s, composition) for s in cover}
    spread = spread_of(cover, composition, exact_max_rows)
    over = {p for p, n in spread.items() if n > max_segments}
    clean = [p for p in pairs if late_minority(parts[p[0].name], parts[p[1].name], exact_max_rows) is None]
    if len(cover) > HARD_FACTOR * max_segments:
        return min(clean or pairs, key=size)

    def joins_spread(p: tuple[SegmentIndex, SegmentIndex]) -> bool:
        a, b = parts[p[0].name], parts[p[1].name]
        return any(
            significant(a.get(x, 0), p[0].rows, exact_max_rows) and significant(b.get(x, 0), p[1].rows, exact_max_rows)
            for x in over
        )

    candidates = [p for p in clean if joins_spread(p) and (max_rows is None or size(p) <= max_rows)]
    return min(candidates, key=size) if candidates else None
