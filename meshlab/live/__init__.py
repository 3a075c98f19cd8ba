"""The real lab: the model's pod on the real Linux kernel, and the proof that they agree.

This is the one part of meshlab that touches sockets, namespaces and processes; it drives
the same model the lessons use and checks it against the kernel:

- :mod:`~meshlab.live.netns`   namespaces with a ``meshlab-`` prefix, bounded commands, a
  registry of what was made, cleanup on success/error/Ctrl-C/SIGTERM/deadline/atexit,
  :func:`~meshlab.live.netns.clean` for leftovers of killed runs;
- :mod:`~meshlab.live.proc`    processes started as a UID/GID inside a namespace
  (``ip netns exec NS setpriv --reuid U --regid G --clear-groups python -m ...``);
- :mod:`~meshlab.live.app`     the application / peer / catcher: answers with what it sees;
- :mod:`~meshlab.live.proxy`   a small real sidecar (UID/GID 1337, 15001/15006,
  ``SO_ORIGINAL_DST``, decisions from :mod:`meshlab.istio.envoy`, a hop limit);
- :mod:`~meshlab.live.agent`   makes connections as any UID/GID (fork + setresuid);
- :mod:`~meshlab.live.lab`     :class:`Lab`, the pod + peer with rules loaded by
  ``iptables-restore`` in the pod namespace only, and :meth:`Lab.connect`;
- :mod:`~meshlab.live.counters`, :mod:`~meshlab.live.xtrace`  the kernel's counters
  (``iptables-save -c``) and its own rule trace (``xtables-monitor --trace``);
- :mod:`~meshlab.live.verify`  catalog scenarios, model beside kernel;
  :mod:`~meshlab.live.differential` connection by connection against ``Netns`` (the default
  rules' connections and the randomized test); :mod:`~meshlab.live.loop` the loop experiment;
- :mod:`~meshlab.live.ambient_lab`  ambient mode: the model's ambient world (two ambient
  pods with istio-cni's rules, the agent's ``ip rule`` and table-100 route, a pod outside
  the mesh, a sidecar pod, a VM on a virtual interface, the node);
  :mod:`~meshlab.live.ztunnel` a small real ztunnel (every socket ``SO_MARK`` 0x539,
  transparent listeners on 15001/15006/15008, HBONE as a plain tunnel with a ``CONNECT``
  line, the app reached from the client's own address, DNS on 15053);
  :mod:`~meshlab.live.ambient_verify` the ``ambient-*`` scenarios, model beside kernel
  (``verify_catalog`` runs them too), and random requests in that world; the ``ambient``
  and ``ambient6`` random families are in :mod:`~meshlab.live.families`;
- :mod:`~meshlab.live.record`  all of them in one JSON document,
  ``meshlab/data/live/recorded-run.json`` (``meshlab live record``), which notebook 07 shows
  where the lab cannot run.

**Privileges.** It needs root: ``ip netns add`` mounts under ``/run/netns`` and loading
rules needs CAP_NET_ADMIN. Can it run unprivileged in a user namespace (``unshare -rn``)?
Not as it stands; tried on Linux 6.18 with iptables 1.8.9 (nf_tables):

* ``unshare -rn`` alone lets you load nat rules in the new network namespace, but *not* the
  owner rules: ``iptables-restore`` fails with "RULE_APPEND failed (Invalid argument)" for
  every ``-m owner --uid-owner 1337`` line, because with ``-r`` only one UID (your own, as
  0) is mapped and the kernel refuses an owner match on an unmapped UID. A second UID
  (1337) and GID must be mapped, which takes ``newuidmap``/``newgidmap`` and a range in
  ``/etc/subuid`` and ``/etc/subgid`` (e.g. ``unshare --map-root-user --map-users=auto
  --map-groups=auto``, util-linux >= 2.38);
* ``ip netns add`` needs a writable ``/run/netns``: add a mount namespace and a tmpfs,
  ``unshare -rnm sh -c 'mount -t tmpfs tmpfs /run; ...'`` - that part works (checked).

So: ``unshare --map-root-user --map-users=auto --map-groups=auto -nm``, mount a tmpfs on
``/run``, then run ``meshlab live`` inside; :func:`unavailable_reason` says what is missing.
"""

from __future__ import annotations

from meshlab.live.netns import LabError, LabTimeout, LabUnavailable, clean


def unavailable_reason() -> str | None:
    """Why the lab cannot run here (not root, a tool missing ...), or None when it can."""
    from meshlab.live.lab import check_environment

    try:
        check_environment()
    except LabUnavailable as error:
        return str(error)
    return None


def __getattr__(name: str) -> object:
    if name in ("Lab", "KernelConnection", "check_environment"):
        from meshlab.live import lab

        return getattr(lab, name)
    if name == "verify_catalog":
        from meshlab.live.verify import verify_catalog

        return verify_catalog
    raise AttributeError(name)


__all__ = ["KernelConnection", "Lab", "LabError", "LabTimeout", "LabUnavailable", "clean",
           "unavailable_reason", "verify_catalog"]
