#!/usr/bin/env bash
# Run ArtiScan on the embedded defaults: SQLite, Celery over SQLite, the database channel layer.
# Started by `make demo`; Ctrl-C stops the web server and the worker together.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
HOST=${ARTISCAN_HOST:-127.0.0.1}
PORT=${ARTISCAN_PORT:-8000}
unset DATABASE_URL REDIS_URL

$BIN/python manage.py migrate --noinput
$BIN/python manage.py collectstatic --noinput >/dev/null
$BIN/python manage.py demo_data
# Any host: the demo holds synthetic images only, and a test modality may be on another machine.
$BIN/python manage.py dicom_sender demo DEMO_MRI --any-host >/dev/null
SCP_PORT=${ARTISCAN_SCP_PORT:-11112}

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

$BIN/celery -A backend.config worker -Q cpu,gpu --concurrency 1 --loglevel INFO &
pids+=($!)
# Beat runs the periodic dashboards refresh and the sweep that re-asks for the scoring of slices
# whose request was lost (CELERY_BEAT_SCHEDULE), as a process of its own: embedded in the worker
# (-B) it was a fork of the worker's main process, inheriting its open SQLite connections to the
# embedded broker with their locks, which SQLite records per process, and its first publish of
# every demo failed with "locking protocol" after ~20 s.
$BIN/celery -A backend.config beat -s "${ARTISCAN_VAR_DIR:-var}/celerybeat-schedule" --loglevel INFO &
pids+=($!)
# Several daphne processes on one port (manage.py serve), so ingest uses more than one core.
$BIN/python manage.py serve --host "$HOST" --port "$PORT" --workers "${ARTISCAN_WEB_WORKERS:-2}" &
pids+=($!)
# Several C-STORE receivers on one port, likewise (one de-identifies on one core at a time).
$BIN/python manage.py dicom_scp --host "$HOST" --port "$SCP_PORT" --processes "${ARTISCAN_SCP_PROCESSES:-2}" &
pids+=($!)

echo
echo "ArtiScan is running at http://$HOST:$PORT/  (API docs: http://$HOST:$PORT/api/docs/)"
echo "DICOMweb: http://$HOST:$PORT/dicomweb/   C-STORE: AE ARTISCAN at $HOST:$SCP_PORT (calling AE DEMO_MRI)"
echo "Sign in with one of the demo logins above; 'manage.py demo_data --reset-passwords' makes new ones."
wait -n
