"""OpenLineage RunEvents for the statements that ran (or per session), built with
openlineage-python's own classes and sent through its transports (file, console, http,
kafka, ...). The event loop only puts audit records on a queue; a thread builds and sends
the events, so a slow lineage backend never slows a statement."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import attr
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    RunFacet,
    column_lineage_dataset,
    error_message_run,
    job_type_job,
    sql_job,
)
from openlineage.client.transport import get_default_factory
from openlineage.client.uuid import generate_static_uuid

from rowgate import __version__
from rowgate.config import Config, Lineage
from rowgate.errors import ConfigError
from rowgate.sql.lineage import statement_lineage

log = logging.getLogger("rowgate.lineage")

PRODUCER = f"https://github.com/rowgate/rowgate/tree/{__version__}"
_INDIRECT = {"where": "FILTER", "join": "JOIN", "group_by": "GROUP_BY", "order_by": "SORT", "having": "FILTER",
             "window": "WINDOW", "distinct_on": "GROUP_BY", "function_arg": "CONDITIONAL"}
_DIRECT = {"identity": "IDENTITY", "transformation": "TRANSFORMATION", "aggregation": "AGGREGATION"}


@attr.define
class RowgateRunFacet(RunFacet):
    """Who consumed the data, and the audit record behind the run."""

    identity: str
    kind: str | None = attr.field(default=None)
    groups: list[str] = attr.field(factory=list)
    onBehalfOf: str | None = attr.field(default=None)
    database: str | None = attr.field(default=None)
    auditReplica: str | None = attr.field(default=None)
    auditSeq: int | None = attr.field(default=None)
    rows: int | None = attr.field(default=None)
    # the consumer saw raw values (an unmask rule, or masking off) and the reason it was allowed
    unmasked: bool | None = attr.field(default=None)
    maskingReason: str | None = attr.field(default=None)
    _additional_skip_redact: ClassVar[list[str]] = ["identity", "database"]

    @staticmethod
    def _get_schema() -> str:
        return "https://rowgate.dev/spec/facets/1-0-0/RowgateRunFacet.json#/$defs/RowgateRunFacet"


def run_id(record: Mapping[str, Any]) -> str:
    """A UUID for the run, derived from its audit record (the same run always has the same id)."""
    instant = datetime.fromisoformat(str(record["ts"]))
    return str(generate_static_uuid(instant, f"{record['replica']}:{record['seq']}".encode()))


class _NoCatalog:
    def columns(self, table: str) -> Sequence[str] | None:
        return None

    def view_sql(self, table: str) -> str | None:
        return None


_NO_CATALOG = _NoCatalog()


class _Datasets:
    """Inputs, outputs and column lineage gathered from statement records (one statement, or a
    whole session)."""

    def __init__(self, upstreams: Mapping[str, tuple[str, str]]) -> None:
        self._upstreams = upstreams
        self.inputs: dict[tuple[str, str], set[str]] = {}
        self.outputs: set[tuple[str, str]] = set()
        self.fields: dict[str, list[column_lineage_dataset.InputField]] = {}
        self.indirect: list[column_lineage_dataset.InputField] = []

    def _dataset(self, database: str, table: str) -> tuple[str, str]:
        namespace, db = self._upstreams.get(database, (f"postgres://unknown/{database}", database))
        return namespace, f"{db}.{table}"

    def _field(self, database: str, column: str, type_: str, subtype: str,
               masked: bool) -> column_lineage_dataset.InputField:
        table, _, name = column.rpartition(".")
        namespace, dataset = self._dataset(database, table)
        self.inputs.setdefault((namespace, dataset), set()).add(name)
        t = column_lineage_dataset.Transformation(type=type_, subtype=subtype, masking=masked)
        return column_lineage_dataset.InputField(namespace=namespace, name=dataset, field=name, transformations=[t])

    def add(self, statement: Mapping[str, Any], completion: Mapping[str, Any] | None) -> None:
        database = str(statement.get("database") or "")
        masked = {k for k, v in ((completion or {}).get("masked") or {}).items() if v}
        for s in statement.get("statements", ()):
            for table in s.get("tables_read", ()):
                self.inputs.setdefault(self._dataset(database, table), set())
            for table in s.get("tables_written", ()):
                self.outputs.add(self._dataset(database, table))
        statements = statement.get("statements", ())
        if len(statements) == 1 and self._add_traced(database, str(statement.get("text") or ""), masked):
            return
        for s in statements:
            for clause, cols in s.get("columns", {}).items():
                for column in cols:
                    out = column.rpartition(".")[2]
                    if clause in ("select", "returning"):
                        self.fields.setdefault(out, []).append(
                            self._field(database, column, "DIRECT", _DIRECT["identity"], out in masked))
                    else:
                        self.indirect.append(
                            self._field(database, column, "INDIRECT", _INDIRECT.get(clause, "FILTER"), False))

    def _add_traced(self, database: str, text: str, masked: set[str]) -> bool:
        """Output columns traced to their sources by the analyzer's lineage (without a catalog:
        ``*`` stays unresolved); False when it cannot say, and the statement facts are used."""
        try:
            (traced,) = statement_lineage(text, _NO_CATALOG)
        except Exception:
            return False
        if traced is None:
            return False
        for out in traced.outputs:
            subtype = _DIRECT.get(out.transform, "TRANSFORMATION")
            for src in sorted(out.sources):
                self.fields.setdefault(out.name, []).append(
                    self._field(database, src, "DIRECT", subtype, out.name in masked))
        for clause, cols in traced.uses.items():
            subtype = _INDIRECT.get(clause, "FILTER")
            self.indirect.extend(self._field(database, c, "INDIRECT", subtype, False) for c in sorted(cols))
        return True

    def facet(self) -> column_lineage_dataset.ColumnLineageDatasetFacet:
        return column_lineage_dataset.ColumnLineageDatasetFacet(
            fields={name: column_lineage_dataset.Fields(inputFields=f) for name, f in self.fields.items()},
            dataset=self.indirect,
        )


class LineageEmitter:
    def __init__(self, cfg: Lineage, config: Config) -> None:
        self._cfg = cfg
        self._upstreams = {name: (f"postgres://{u.host}:{u.port}", u.database) for name, u in config.upstreams.items()}
        transport_cfg = dict(cfg.transport)
        path = transport_cfg.get("log_file_path")
        if isinstance(path, str) and not Path(path).is_absolute() and config.data_dir is not None:
            transport_cfg["log_file_path"] = str(config.data_dir / path)
        try:
            transport = get_default_factory().create(transport_cfg)
        except Exception as e:
            raise ConfigError(f"lineage.transport: {e}") from e
        self._client = OpenLineageClient(transport=transport, config={"transport": transport_cfg})
        self._queue: queue.Queue[tuple[str, tuple[Any, ...]] | None] = queue.Queue(maxsize=100_000)
        self._sessions: dict[tuple[str, int], tuple[Mapping[str, Any], _Datasets]] = {}
        self._thread = threading.Thread(target=self._run, daemon=True, name="rowgate-lineage")
        self._thread.start()

    # --- called on the event loop: never blocks --------------------------------------

    def _put(self, kind: str, *args: Any) -> None:
        try:
            self._queue.put_nowait((kind, args))
        except queue.Full:
            log.warning("lineage: queue full, event dropped (the audit log still has the record)")

    def statement_started(self, record: Mapping[str, Any]) -> None:
        if self._cfg.per == "statement":
            self._put("start", record)

    def statement_completed(self, record: Mapping[str, Any], completion: Mapping[str, Any]) -> None:
        self._put("complete", record, completion)

    def session_started(self, record: Mapping[str, Any]) -> None:
        if self._cfg.per == "session":
            self._put("session_start", record)

    def session_ended(self, record: Mapping[str, Any]) -> None:
        if self._cfg.per == "session":
            self._put("session_end", record)

    def close(self, timeout: float = 10) -> None:
        self._queue.put(None)
        self._thread.join(timeout)
        self._client.close(timeout)

    # --- the thread ------------------------------------------------------------------

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            kind, args = item
            try:
                event = getattr(self, f"_on_{kind}")(*args)
                if event is not None:
                    self._client.emit(event)
            except Exception:
                log.exception("lineage: could not emit a %s event", kind)

    def _job(self, record: Mapping[str, Any], text: str | None) -> Job:
        app = str(record.get("application_name") or "") or "unknown"
        facets: dict[str, Any] = {
            "jobType": job_type_job.JobTypeJobFacet(processingType="BATCH", integration="ROWGATE",
                                                    jobType="QUERY" if text is not None else "SESSION"),
        }
        if text is not None:
            facets["sql"] = sql_job.SQLJobFacet(query=text, dialect="postgres")
        return Job(namespace=self._cfg.namespace, name=f"{record.get('identity')}.{app}", facets=facets)

    @staticmethod
    def _run_facets(record: Mapping[str, Any], completion: Mapping[str, Any] | None) -> dict[str, Any]:
        masking = record.get("masking") or {}
        facets: dict[str, Any] = {"rowgate": RowgateRunFacet(
            identity=str(record.get("identity")), kind=record.get("kind"), groups=list(record.get("groups") or []),
            onBehalfOf=record.get("on_behalf_of"), database=record.get("database"),
            auditReplica=str(record["replica"]), auditSeq=int(record["seq"]),
            rows=(completion or {}).get("rows"), unmasked=masking.get("unmasked"), maskingReason=masking.get("reason"),
        )}
        if completion is not None and completion.get("error"):
            facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
                message=f"SQLSTATE {completion['error']}", programmingLanguage="SQL")
        return facets

    def _event(self, state: RunState, record: Mapping[str, Any], job_record: Mapping[str, Any], text: str | None,
               at: Mapping[str, Any], datasets: _Datasets | None, completion: Mapping[str, Any] | None) -> RunEvent:
        inputs: list[InputDataset] = []
        outputs: list[OutputDataset] = []
        if datasets is not None:
            inputs = [InputDataset(namespace=ns, name=name) for ns, name in sorted(datasets.inputs)]
            outputs = [OutputDataset(namespace=ns, name=name) for ns, name in sorted(datasets.outputs)]
            if datasets.fields or datasets.indirect:
                # the result set delivered to the consumer carries the column lineage of what it read
                outputs.append(OutputDataset(
                    namespace=self._cfg.namespace, name=f"{job_record.get('identity')}.result",
                    facets={"columnLineage": datasets.facet()}))
        return RunEvent(
            eventType=state, eventTime=str(at["ts"]), producer=PRODUCER,
            run=Run(runId=run_id(record), facets=self._run_facets(record, completion)),
            job=self._job(job_record, text), inputs=inputs, outputs=outputs,
        )

    def _on_start(self, record: Mapping[str, Any]) -> RunEvent:
        datasets = _Datasets(self._upstreams)
        datasets.add(record, None)
        return self._event(RunState.START, record, record, str(record.get("text")), record, datasets, None)

    def _on_complete(self, record: Mapping[str, Any], completion: Mapping[str, Any]) -> RunEvent | None:
        if self._cfg.per == "session":
            entry = self._sessions.get((str(record["replica"]), int(record.get("session") or 0)))
            if entry is not None:
                entry[1].add(record, completion)
            return None
        datasets = _Datasets(self._upstreams)
        datasets.add(record, completion)
        state = RunState.FAIL if completion.get("error") else RunState.COMPLETE
        return self._event(state, record, record, str(record.get("text")), completion, datasets, completion)

    def _on_session_start(self, record: Mapping[str, Any]) -> RunEvent:
        self._sessions[(str(record["replica"]), int(record["session"]))] = (record, _Datasets(self._upstreams))
        return self._event(RunState.START, record, record, None, record, None, None)

    def _on_session_end(self, record: Mapping[str, Any]) -> RunEvent | None:
        entry = self._sessions.pop((str(record["replica"]), int(record["session"])), None)
        if entry is None:
            return None
        start, datasets = entry
        state = RunState.FAIL if record.get("reason") else RunState.COMPLETE
        return self._event(state, start, start, None, record, datasets, None)

