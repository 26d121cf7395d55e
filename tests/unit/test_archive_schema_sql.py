"""Column lists from pg_dump's CREATE TABLEs, as `pg_restore --schema-only` prints them."""

from __future__ import annotations

from drsentry.operator.archive_schema import table_columns

# Taken from `pg_restore --schema-only --section=pre-data` of a PostgreSQL 18 archive.
SCHEMA_SQL = """
--
-- Name: We"ird; Type: TABLE; Schema: Odd Schema; Owner: postgres
--

CREATE TABLE "Odd Schema"."We""ird" (
    "Col One" text,
    "x,y" integer,
    "constraint" text
);

CREATE TABLE public.appointments (
    id bigint NOT NULL,
    status text DEFAULT 'booked'::text NOT NULL,
    starts_at timestamp with time zone NOT NULL,
    label character varying(40) COLLATE pg_catalog."C",
    CONSTRAINT appointments_status_check CHECK ((status = ANY (ARRAY['booked'::text, 'done'::text])))
);

CREATE TABLE public.child (
    extra integer
)
INHERITS (public.organizations);

CREATE TABLE public.ev (
    id bigint NOT NULL,
    at timestamp with time zone NOT NULL
)
PARTITION BY RANGE (at);

CREATE TABLE public.ev_2026 (
    id bigint CONSTRAINT ev_id_not_null NOT NULL,
    at timestamp with time zone CONSTRAINT ev_at_not_null NOT NULL
);

CREATE UNLOGGED TABLE audit.events (
    payload public.citext,
    total numeric(10,2) GENERATED ALWAYS AS ((1)::numeric) STORED
);

CREATE TABLE public.typed OF public.person_type (
    CONSTRAINT typed_check CHECK (true)
);

CREATE TABLE public.cut_off (
    id bigint
"""


def test_columns_and_types_of_every_table_pg_dump_lists_in_full() -> None:
    tables = table_columns(SCHEMA_SQL)

    assert tables == {
        'Odd Schema.We"ird': {"Col One": "text", "x,y": "integer", "constraint": "text"},
        "appointments": {
            "id": "bigint",
            "status": "text",
            "starts_at": "timestamp with time zone",
            "label": "character varying(40)",
        },
        "ev": {"id": "bigint", "at": "timestamp with time zone"},
        "ev_2026": {"id": "bigint", "at": "timestamp with time zone"},
        "audit.events": {"payload": "public.citext", "total": "numeric(10,2)"},
    }


def test_tables_whose_columns_are_partly_elsewhere_are_left_out() -> None:
    tables = table_columns(SCHEMA_SQL)

    # INHERITS adds the parent's columns, OF the type's; a cut-off text lists only some
    assert {"child", "typed", "cut_off"}.isdisjoint(tables)
