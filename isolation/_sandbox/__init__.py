"""Sandbox enforcement: what the Linux kernel offers, and how a process applies it to itself.

The parts, each a module: ``kernel`` (what this kernel offers, detected once), ``landlock`` and
``seccomp`` (thin bindings written from the kernel's documented interfaces), ``plan`` (a
:class:`~isolation.Sandbox` turned into the exact rules for one component, or a refusal naming
what is missing), ``enforce`` (the steps a sandbox zygote and its children take, in order),
``imports`` (a sandboxed process imports the program's modules from their exact files) and
``resolver`` (host names a sandbox may reach, resolved by the parent). Nothing here knows about
processes, channels or zygotes: ``isolation._sandbox_zygote`` and ``isolation._sandbox_boot``
put the parts together.
"""
