"""The trace simulator: the scheduler's policy on a virtual clock against a fleet model.

* ``fleet``     the continuous-batching worker model (pure)
* ``simulate``  the discrete-event loop -> events rows + summary
* ``summary``   the ``--json`` figures (Jain, service gap, busy fraction, waits)
* ``events``    the events CSV of CONTRACTS.md section 3
* ``traces``    the trace CSV; the Azure 2023 converter
* ``workload``  the seeded bursty multi-tenant generator
* ``curves``    interval and cumulative-curve arithmetic the summary uses

Nothing is imported here, so ``import scheduler.sim.traces`` stays light.
"""
