"""Which functions a statement may call and still be judged by its text alone.

A function not on this list may do anything (write tables, read files, open connections,
change the role), so a statement calling it is marked UNKNOWN_EFFECT. The list is generous
for PostgreSQL's built-ins that only compute or read catalogs and session state, and
deliberately leaves out the ones with effects outside the statement's visible tables:
file and network access (pg_read_file, pg_ls_dir, lo_import, dblink*), server control
(pg_terminate_backend, pg_reload_conf), settings (set_config), notification (pg_notify),
and functions that run a query given as text (query_to_xml, table_to_xml, ts_stat, ...)
whose tables the text does not show.

Deployments extend it with their own vetted functions through ``extra``: schema-qualified
names match exactly, bare names match the unqualified call only.
"""

from __future__ import annotations

from collections.abc import Iterable

# nextval/setval change a sequence: the analyzer treats them as writes of the sequence
# named by their literal argument rather than as code of unknown effect.
SEQUENCE_WRITERS = frozenset({"nextval", "setval"})

# set_config with a literal setting name is judged like SET of that setting. Settings rowgate
# tracks (or must never see changed behind its back) keep UNKNOWN_EFFECT, and role changes
# are flagged SET_ROLE on top, as is a computed setting name.
SET_CONFIG = "set_config"
# (standard_conforming_strings and client_encoding change how later statements are lexed)
SET_CONFIG_TRACKED = frozenset(
    {"role", "session_authorization", "search_path", "standard_conforming_strings", "client_encoding"}
)

_AGGREGATES = """
count sum avg min max array_agg string_agg json_agg jsonb_agg json_agg_strict jsonb_agg_strict
json_object_agg jsonb_object_agg json_object_agg_strict jsonb_object_agg_strict json_object_agg_unique
jsonb_object_agg_unique json_object_agg_unique_strict jsonb_object_agg_unique_strict json_arrayagg
json_objectagg bool_and bool_or every bit_and bit_or bit_xor stddev stddev_pop stddev_samp variance
var_pop var_samp corr covar_pop covar_samp regr_avgx regr_avgy regr_count regr_intercept regr_r2
regr_slope regr_sxx regr_sxy regr_syy mode percentile_cont percentile_disc range_agg
range_intersect_agg xmlagg any_value grouping
"""

_WINDOW = """
row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value nth_value
"""

_STRINGS = """
ascii chr bit_length char_length character_length octet_length length lower upper initcap lpad rpad
ltrim rtrim btrim trim substr substring position strpos overlay replace translate repeat reverse
left right split_part starts_with concat concat_ws format md5 sha224 sha256 sha384 sha512 crc32 crc32c
encode decode to_hex to_bin to_oct quote_ident quote_literal quote_nullable regexp_count regexp_instr
regexp_like regexp_match regexp_matches regexp_replace regexp_split_to_array regexp_split_to_table
regexp_substr string_to_array string_to_table unistr normalize is_normalized casefold to_ascii convert
convert_from convert_to get_byte set_byte get_bit set_bit bit_count parse_ident similar_escape
similar_to_escape text_larger text_smaller textcat like ilike like_escape
to_char to_date to_number to_timestamp
"""

_MATH = """
abs ceil ceiling floor round trunc sign sqrt cbrt exp ln log log10 power pow mod div pi degrees radians
sin cos tan cot asin acos atan atan2 sind cosd tand cotd asind acosd atand atan2d sinh cosh tanh asinh
acosh atanh width_bucket gcd lcm factorial scale min_scale trim_scale random random_normal setseed erf
erfc gamma lgamma numeric_inc int4larger int4smaller
"""

_DATETIME = """
age clock_timestamp date_bin date_part date_trunc extract isfinite justify_days justify_hours
justify_interval make_date make_interval make_time make_timestamp make_timestamptz now
statement_timestamp timeofday transaction_timestamp date_add date_subtract timezone overlaps
"""

_JSON = """
to_json to_jsonb array_to_json row_to_json json_build_array json_build_object jsonb_build_array
jsonb_build_object json_object jsonb_object json_array_length jsonb_array_length json_each jsonb_each
json_each_text jsonb_each_text json_extract_path jsonb_extract_path json_extract_path_text
jsonb_extract_path_text json_object_keys jsonb_object_keys json_populate_record jsonb_populate_record
jsonb_populate_record_valid json_populate_recordset jsonb_populate_recordset json_to_record
jsonb_to_record json_to_recordset jsonb_to_recordset json_array_elements jsonb_array_elements
json_array_elements_text jsonb_array_elements_text json_typeof jsonb_typeof json_strip_nulls
jsonb_strip_nulls jsonb_set jsonb_set_lax jsonb_insert jsonb_pretty jsonb_path_exists jsonb_path_match
jsonb_path_query jsonb_path_query_array jsonb_path_query_first jsonb_path_exists_tz jsonb_path_match_tz
jsonb_path_query_tz jsonb_path_query_array_tz jsonb_path_query_first_tz jsonb_concat jsonb_contains
jsonb_exists jsonb_exists_any jsonb_exists_all jsonb_delete jsonb_delete_path json_scalar json_serialize
"""

_ARRAYS = """
array_append array_cat array_dims array_fill array_length array_lower array_ndims array_position
array_positions array_prepend array_remove array_replace array_to_string array_upper cardinality
trim_array unnest array_sample array_shuffle array_reverse array_sort generate_subscripts
generate_series
"""

_RANGES_NETWORK_MISC = """
isempty lower_inc upper_inc lower_inf upper_inf range_merge int4range int8range numrange tsrange
tstzrange daterange int4multirange int8multirange nummultirange tsmultirange tstzmultirange
datemultirange
host hostmask masklen netmask network set_masklen abbrev broadcast family inet_merge inet_same_family
gen_random_uuid uuidv4 uuidv7 uuid_extract_timestamp uuid_extract_version
to_tsvector to_tsquery plainto_tsquery phraseto_tsquery websearch_to_tsquery ts_rank ts_rank_cd
ts_headline setweight strip numnode querytree tsvector_to_array array_to_tsvector ts_delete ts_filter
ts_lexize ts_debug ts_parse ts_token_type get_current_ts_config
xpath xpath_exists xml_is_well_formed xml_is_well_formed_document xml_is_well_formed_content xmltext
xmlcomment texttoxml
area center diameter height width radius npoints pclose popen isclosed isopen bound_box box circle
line lseg path point polygon
num_nulls num_nonnulls
"""

_TYPES = """
int2 int4 int8 integer smallint bigint float4 float8 numeric real text varchar bpchar char name bool
boolean date time timetz timestamp timestamptz interval bytea inet cidr macaddr macaddr8 uuid json jsonb
xml money oid regclass regtype regproc regprocedure regoper regoperator regnamespace regrole regconfig
regdictionary regcollation bit varbit tsvector tsquery
"""

_SESSION_AND_CATALOG = """
current_setting current_database current_schema current_schemas current_user current_role session_user
system_user user current_catalog current_query version inet_client_addr inet_client_port inet_server_addr
inet_server_port pg_backend_pid pg_blocking_pids pg_safe_snapshot_blocking_pids pg_sleep pg_sleep_for
pg_sleep_until pg_typeof pg_column_size pg_column_compression pg_column_toast_chunk_id pg_collation_for
pg_conf_load_time pg_postmaster_start_time pg_jit_available pg_trigger_depth pg_listening_channels
pg_notification_queue_usage pg_my_temp_schema pg_is_other_temp_schema pg_is_in_recovery
pg_is_wal_replay_paused pg_last_wal_receive_lsn pg_last_wal_replay_lsn pg_last_xact_replay_timestamp
pg_current_wal_lsn pg_current_wal_insert_lsn pg_current_wal_flush_lsn pg_wal_lsn_diff pg_walfile_name
pg_walfile_name_offset pg_control_checkpoint pg_control_system pg_control_init pg_control_recovery
txid_current txid_current_if_assigned txid_current_snapshot txid_snapshot_xip txid_snapshot_xmax
txid_snapshot_xmin txid_visible_in_snapshot txid_status pg_current_xact_id pg_current_xact_id_if_assigned
pg_current_snapshot pg_snapshot_xip pg_snapshot_xmax pg_snapshot_xmin pg_visible_in_snapshot pg_xact_status
pg_xact_commit_timestamp pg_xact_commit_timestamp_origin pg_last_committed_xact age mxid_age
pg_advisory_lock pg_advisory_lock_shared pg_advisory_unlock pg_advisory_unlock_shared pg_advisory_unlock_all
pg_advisory_xact_lock pg_advisory_xact_lock_shared pg_try_advisory_lock pg_try_advisory_lock_shared
pg_try_advisory_xact_lock pg_try_advisory_xact_lock_shared
currval lastval pg_sequence_last_value pg_sequence_parameters
format_type obj_description col_description shobj_description pg_describe_object pg_identify_object
pg_identify_object_as_address pg_encoding_to_char pg_char_to_encoding pg_encoding_max_length
getdatabaseencoding pg_client_encoding pg_tablespace_location pg_tablespace_databases pg_partition_ancestors
pg_partition_tree pg_partition_root pg_relation_is_publishable pg_relation_is_updatable
pg_column_is_updatable pg_available_extensions pg_available_extension_versions pg_options_to_table
pg_relation_filenode pg_relation_filepath pg_filenode_relation pg_indexam_has_property
pg_index_has_property pg_index_column_has_property pg_size_pretty pg_size_bytes pg_relation_size
pg_total_relation_size pg_table_size pg_indexes_size pg_database_size pg_tablespace_size pg_has_role
row_security_active pg_input_is_valid pg_input_error_info pg_collation_actual_version
pg_database_collation_actual_version pg_settings_get_flags pg_show_all_settings pg_show_all_file_settings
pg_backup_start_time pg_is_in_backup pg_tablespace_size pg_cursor pg_prepared_statement
pg_prepared_xact pg_timezone_names pg_timezone_abbrevs pg_lock_status pg_config pg_hba_file_rules
pg_ident_file_mappings pg_event_trigger_ddl_commands pg_event_trigger_dropped_objects
pg_event_trigger_table_rewrite_oid pg_event_trigger_table_rewrite_reason pg_mcv_list_items
array_in array_out textin textout
to_regclass to_regcollation to_regnamespace to_regoper to_regoperator to_regproc to_regprocedure
to_regrole to_regtype to_regtypemod
"""

_PREFIX_SAFE = ("pg_get_", "pg_stat_get_")
_SUFFIX_SAFE = ("_is_visible",)

# information_schema's helper functions, called by pgjdbc and other drivers' metadata queries.
_QUALIFIED_SAFE = frozenset(
    "information_schema." + n
    for n in [
        "_pg_expandarray", "_pg_index_position", "_pg_truetypid", "_pg_truetypmod", "_pg_char_max_length",
        "_pg_char_octet_length", "_pg_numeric_precision", "_pg_numeric_precision_radix", "_pg_numeric_scale",
        "_pg_datetime_precision", "_pg_interval_type", "_pg_keysequal",
    ]
)

SAFE_BUILTINS: frozenset[str] = frozenset(
    " ".join([_AGGREGATES, _WINDOW, _STRINGS, _MATH, _DATETIME, _JSON, _ARRAYS, _RANGES_NETWORK_MISC, _TYPES,
              _SESSION_AND_CATALOG]).split()
)
# column lineage marks a value computed by one of these as an aggregation
AGGREGATES: frozenset[str] = frozenset(_AGGREGATES.split())


def _builtin_safe(base: str) -> bool:
    if base in SAFE_BUILTINS:
        return True
    if base.startswith("has_") and base.endswith("_privilege"):
        return True
    return base.startswith(_PREFIX_SAFE) or base.endswith(_SUFFIX_SAFE)


def is_known_safe(name: str, *, extra: Iterable[str] = (), shadowable: bool = False) -> bool:
    """Whether calling ``name`` (as written: ``lower``, ``pg_catalog.lower``, ``app.fn``)
    has no effect beyond computing its result from visible inputs.

    ``shadowable``: the session's search_path puts a schema before pg_catalog, so a bare
    name could be a same-named user function; then only qualified built-ins and ``extra``
    names count as safe."""
    if name in extra or name in _QUALIFIED_SAFE:
        return True
    schema, dot, base = name.rpartition(".")
    if dot:
        return schema == "pg_catalog" and _builtin_safe(base)
    return not shadowable and _builtin_safe(name)


def base_name(name: str) -> str:
    """The function name without a pg_catalog qualifier; other schemas are kept so a user
    function called ``app.set_config`` is not mistaken for the built-in."""
    return name.removeprefix("pg_catalog.")


# The operator names PostgreSQL itself defines (pg_operator of a fresh cluster), plus the
# names the parser gives LIKE, BETWEEN and friends.
BUILTIN_OPERATORS = frozenset({
    "+", "-", "*", "/", "%", "^", "|/", "||/", "!", "!!", "@", "&", "|", "#", "~", "<<", ">>",
    "=", "<>", "<", ">", "<=", ">=", "||", "~~", "!~~", "~~*", "!~~*", "~*", "!~", "!~*",
    "&&", "@>", "<@", "->", "->>", "#>", "#>>", "?", "?|", "?&", "@?", "@@", "@@@", "#-",
    "<->", "<<|", "|>>", "&<", "&>", "<<=", ">>=", "-|-", "##", "?#", "?-", "?-|", "?||",
    "~=", "<^", ">^", "&<|", "|&>", "^@", "<%", "%>", "<<%", "%>>", "<<->", "<->>", "<#>",
    "BETWEEN", "NOT BETWEEN", "BETWEEN SYMMETRIC", "NOT BETWEEN SYMMETRIC",
})
