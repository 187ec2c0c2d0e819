"""The quota cgroups the throttle fault makes: a node that ended without removing its own
leaves it to the next quota made, never to the machine."""

from __future__ import annotations

import os

from mqprobe.pieces.inject import _remove_stale


def test_a_quota_cgroup_whose_node_is_gone_is_removed_and_a_live_ones_is_kept(tmp_path):
    gone, alive = f"mqprobe-n1-{2**22 + 7}", f"mqprobe-n2-{os.getpid()}"
    for name in (gone, alive, "someone-elses-9999999", "mqprobe-n3-notapid"):
        (tmp_path / name).mkdir()
    _remove_stale(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [alive, "someone-elses-9999999", "mqprobe-n3-notapid"])
