"""The `catalog_engine` fixture's catalog as a URL, for an app or a `kvarus` command to open.

On SQLite it is the settings' own file; on PostgreSQL the test's schema, named in the URL's
`options` so that every connection `make_engine` opens lands in it.
"""

from sqlalchemy import Engine, text

from tests.conftest import POSTGRES_URL


def catalog_url(engine: Engine) -> str:
    if engine.dialect.name == "sqlite":
        return engine.url.render_as_string(hide_password=False)
    with engine.connect() as connection:
        schema = connection.execute(text("SHOW search_path")).scalar_one()
    return f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
