# A small PostgreSQL image on a local Debian base, for machines that cannot pull the official
# `postgres` image: Debian's postgresql-15, with an entrypoint that reads the official image's
# variables (POSTGRES_PASSWORD, POSTGRES_USER, POSTGRES_DB, PGDATA) and keeps its data in the
# same place (/var/lib/postgresql/data), so docker-compose.yml runs it unchanged:
#
#   podman build -f tests/compose/postgres.Dockerfile -t localhost/hetnas-postgres:15 tests/compose
#   POSTGRES_IMAGE=localhost/hetnas-postgres:15 in .env
#
# tests/test_compose_stack.py builds it on localhost/hetnas-base:bookworm (debian-base.sh).
ARG BASE_IMAGE=localhost/hetnas-base:bookworm
FROM ${BASE_IMAGE}

# No cluster of Debian's own (/etc/postgresql/15/main): the entrypoint makes one in PGDATA.
RUN mkdir -p /etc/postgresql-common/createcluster.d \
    && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/no-main.conf \
    && apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        postgresql-15 >/dev/null \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
    && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql

ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME /var/lib/postgresql/data
EXPOSE 5432
# Fast shutdown, as the official image: open sessions are ended, nothing is lost.
STOPSIGNAL SIGINT
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
