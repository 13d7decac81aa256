"""Export and import of compact archive files: docs/format.md, "Archive format, versions 1 and 2".

An archive holds what is needed to rebuild chosen snapshots in another store:
their records, the delta and state objects of their chains back to a base, and
one session document per session. Its format does not depend on the store's:
snapshot ids hash the same record JSON in store formats 1 and 2, so archives
written by either import into either. It is built for size and for safety:

* size: object *payloads* (not the store's per-object zstd frames) go into one
  zstd stream at a high level, in chain order, so deltas compress against each
  other. A keyframe whose parent is also in the archive is written as a patch
  from the parent's state (a "state patch"), which costs about what a delta
  costs; the importer rebuilds the state and checks it against its id.
* streaming: export writes payloads into the compressor one at a time and the
  index after them; import decompresses into a temporary spool file, never
  holding more than one object (or one state being rebuilt) in memory.
* safety: an archive is untrusted. Import checks the trailer, the limits it
  declares (every number read is range-checked where it is read), the checksums,
  every object against its id, every record, session document and chain, rebuilds
  every state it will write against its hash, and only then writes, session by
  session, through ``Session.import_snapshots``. A bad archive raises
  ``ArchiveError`` and leaves the store as it was.
"""

from ..errors import ArchiveError
from .exporter import ExportReport, export_archive
from .importer import DEFAULT_MAX_SIZE, check_archive, import_archive
from .layout import ARCHIVE_VERSION, DEFAULT_LEVEL, PROGRESS_EVERY
from .sessions import CONFLICT_POLICIES, ImportReport, SessionImport

__all__ = [
    "ARCHIVE_VERSION",
    "CONFLICT_POLICIES",
    "DEFAULT_LEVEL",
    "DEFAULT_MAX_SIZE",
    "PROGRESS_EVERY",
    "ArchiveError",
    "ExportReport",
    "ImportReport",
    "SessionImport",
    "check_archive",
    "export_archive",
    "import_archive",
]
