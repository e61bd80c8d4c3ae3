import psycopg


def test_query_through_proxy(proxy, upstream):
    with psycopg.connect(proxy.dsn("alice")) as conn:
        row = conn.execute("SELECT current_database(), 40 + 2").fetchone()
    assert row == (upstream.database, 42)
