"""The audit log and lineage emitter a config asks for."""

from __future__ import annotations

import logging

from rowgate.audit import journal
from rowgate.audit.recorder import AuditRecorder
from rowgate.audit.signing import Signer, load_private_key
from rowgate.audit.store import open_store
from rowgate.audit.writer import AuditWriter, replica_id
from rowgate.config import Config
from rowgate.errors import ConfigError

log = logging.getLogger("rowgate.audit")


def build_recorder(config: Config) -> AuditRecorder | None:
    """None when the audit log is off (``audit.enabled: false``, or nowhere to keep it)."""
    cfg = config.audit
    if not cfg.enabled:
        log.warning("audit log disabled (audit.enabled: false): statements are not recorded")
        return None
    if config.data_dir is None:
        if cfg.url is not None:
            raise ConfigError("audit.url needs data_dir: the audit journal is kept there (the store is filled "
                              "from it)", hint="set data_dir, or audit.enabled: false")
        log.warning("audit log disabled: set data_dir to record every statement")
        return None
    signer = Signer(load_private_key(cfg.signing_key_file)) if cfg.signing_key_file is not None else None
    password = cfg.password.resolve("audit.password") if cfg.password is not None else None
    store = open_store(cfg.url, config.data_dir, password)
    try:
        writer = AuditWriter(
            store, replica_id(config.data_dir, cfg.replica), journal.root(config.data_dir), signer=signer,
            fsync_interval=cfg.fsync_interval, checkpoint_records=cfg.checkpoint_records,
            checkpoint_interval=cfg.checkpoint_interval, retention=cfg.retention,
            max_import_lag=cfg.max_import_lag, max_backlog=cfg.max_backlog,
        ).start()
    except BaseException:
        store.close()
        raise
    lineage = None
    if config.lineage.enabled:
        from rowgate.audit.lineage import LineageEmitter  # openlineage is imported only when used

        lineage = LineageEmitter(config.lineage, config)
    recorder = AuditRecorder(writer, cfg, lineage, masking=config.masking)
    recorder.policy_loaded(config)
    return recorder
