"""Pods and worlds keep their own variants: nothing keyed by identity, nothing unbounded."""

from __future__ import annotations

import pytest

from meshlab.pod import Pod
from meshlab.variants import Variants
from meshlab.world import World

UID_EXEMPTION = "-m owner --uid-owner 1337 -j RETURN"


def test_a_new_world_never_gets_the_variant_of_a_dead_one() -> None:
    # A cache keyed by id(world) hands the dead world's variant (hop limit 16) to a new world
    # that happens to get the same id; CPython reuses ids of freed objects at once.
    base = World.default()
    for _ in range(50):
        old = World(base.pods, base.services, hop_limit=16)
        assert old.with_subject_rules(without_rules=(UID_EXEMPTION,)).hop_limit == 16
        del old  # freed at once (no cycle), so its id is free for the next world
        new = World(base.pods, base.services, hop_limit=3)
        variant = new.with_subject_rules(without_rules=(UID_EXEMPTION,))
        assert variant.hop_limit == 3
        assert variant.pod(variant.subject).removed_rules == (UID_EXEMPTION,)


def test_a_world_reuses_its_own_variant() -> None:
    world = World(World.default().pods, World.default().services, hop_limit=5)
    first = world.with_subject_rules(without_rules=(UID_EXEMPTION,))
    assert world.with_subject_rules(without_rules=[UID_EXEMPTION]) is first
    assert world.with_subject_rules() is world


def test_a_pod_keeps_a_bounded_number_of_variants() -> None:
    pod = Pod.default(name="bounded")
    limit = pod._variants.limit
    for port in range(limit + 8):
        pod.with_rules(flags=["-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
                              "-i", "*", "-b", "*", "-d", f"15090,15021,15020,{20000 + port}"])
    assert len(pod._variants) == limit


def test_variants_forget_the_least_recently_used_first() -> None:
    kept: Variants[str] = Variants(limit=2)
    kept.keep("a", "A")
    kept.keep("b", "B")
    assert kept.get("a") == "A"  # "b" is now the oldest
    kept.keep("c", "C")
    assert (kept.get("a"), kept.get("b"), kept.get("c")) == ("A", None, "C")
    with pytest.raises(ValueError, match="at least one"):
        Variants(limit=0)


def test_a_copy_of_a_pod_starts_with_no_variants() -> None:
    from dataclasses import replace

    pod = Pod.default(name="copied")
    pod.with_rules(without_rules=(UID_EXEMPTION,))
    assert len(pod._variants) == 1
    assert len(replace(pod, namespace="other")._variants) == 0
