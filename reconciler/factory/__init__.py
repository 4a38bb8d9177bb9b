"""Reading the factory: the HTTP client and what its answers become.

    client      the Foundries API over httpx (or the embedded local factory): paging, batches of reads
    transport   retries of idempotent requests, a deadline for every request and every run
    apitime     the API's timestamps
    wire        every answer of the factory -> a typed ``core`` value (one wave model, ``core.ObservedWave``)
    history     which waves a run reads from a long history: the active ones and those the manifests name
    observe     the reads a plan needs -> ``core.ObservedState``
    status      the reads ``reconcile status`` needs -> ``core.StatusReport``
    wavedevices the devices of a wave, classified (failed, offline, pending), for gates and ``status --devices``
    fleet       ``reconcile devices``: a UUID file from the fleet
    adopt       the read-only reads of ``reconcile import``: waves, their targets' expiry and signers

Writes go through ``reconciler.apply``, which uses this client; nothing here decides what to write.
"""

from reconciler.factory.adopt import read_wave_facts, read_waves, wave_list_head
from reconciler.factory.apitime import parse_time
from reconciler.factory.client import Backend, FactoryClient, select_backend
from reconciler.factory.fleet import DeviceSelection, how_made, list_devices
from reconciler.factory.history import AHEAD_WAVES, WaveListHead, list_ahead
from reconciler.factory.observe import fill_device_counts, observe, rollout_options
from reconciler.factory.status import read_devices, read_status
from reconciler.factory.wire import parse_prod_targets, parse_progress, parse_wave, wave_signers

__all__ = [
    "AHEAD_WAVES",
    "Backend",
    "DeviceSelection",
    "FactoryClient",
    "WaveListHead",
    "fill_device_counts",
    "how_made",
    "list_ahead",
    "list_devices",
    "observe",
    "parse_prod_targets",
    "parse_progress",
    "parse_time",
    "parse_wave",
    "read_devices",
    "read_status",
    "read_wave_facts",
    "read_waves",
    "rollout_options",
    "select_backend",
    "wave_list_head",
    "wave_signers",
]
