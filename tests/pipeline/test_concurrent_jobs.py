"""Jobs running at once in several workers, and beside the webhook intake.

- The layer cache: a miss holds the layer's lock until the layer is put (or the cache is left),
  and a second reader waits for it, then reuses the entry. With two real Celery workers, two images
  that share a new base layer, converted at the same time, convert the base once and mount it once.
- A job runs while another session holds its instance's row: starting and finishing it lock the
  job row only (locking the instance too deadlocked against a delivery that locks the instance,
  then the job).
"""

import contextlib
import hashlib
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import OperationalError, connection, transaction

from converter.cache import CachedLayer
from pipeline import actions
from pipeline.choices import JobStatus
from pipeline.layer_cache import DatabaseLayerCache
from pipeline.models import AcceleratedImage, ConversionJob, LayerCacheEntry
from registries.models import Instance
from tests.support.images import Platform, push_image

LAYER = "sha256:" + "ab" * 32
KEY = "level9-chunk4194304"
CONVERTED = CachedLayer(digest="sha256:" + "cd" * 32, size=10, diff_id="sha256:" + "ef" * 32,
                        toc_digest="sha256:" + "01" * 32, uncompressed_size=20, registry="r:5000", repository="team/a")


def in_other_session(function):
    """Run `function` on a thread of its own, so with a database session of its own (closed after)."""

    def run():
        try:
            return function()
        finally:
            connection.close()

    pool = ThreadPoolExecutor(1)
    future = pool.submit(run)
    pool.shutdown(wait=False)
    return future


def test_a_miss_makes_the_next_reader_wait_until_the_layer_is_put_then_reuse_it(transactional_db):
    instance = Instance.objects.create(name="one", url="http://registry.example:5000")
    converting = DatabaseLayerCache(instance)
    assert converting.get(LAYER, KEY) is None  # a miss: this job converts the layer
    waiting = in_other_session(lambda: DatabaseLayerCache(Instance.objects.get()).get(LAYER, KEY))
    time.sleep(0.5)
    assert not waiting.done()  # it waits for the conversion instead of converting too
    converting.put(LAYER, KEY, CONVERTED)
    assert waiting.result(timeout=30) == CONVERTED
    assert LayerCacheEntry.objects.get().hits == 1
    # another layer or another cache key is not held up
    assert in_other_session(lambda: DatabaseLayerCache(instance).get(LAYER, "other-key")).result(timeout=30) is None


def test_leaving_the_cache_releases_the_lock_of_a_conversion_that_failed(transactional_db):
    instance = Instance.objects.create(name="one", url="http://registry.example:5000")
    with DatabaseLayerCache(instance) as failed:
        assert failed.get(LAYER, KEY) is None
        # the conversion raises here, before any put
    assert in_other_session(lambda: DatabaseLayerCache(instance).get(LAYER, KEY)).result(timeout=30) is None


@pytest.mark.registry
def test_two_workers_meeting_a_new_base_layer_convert_it_once(celery_worker_factory, registry, tmp_path):
    instance = Instance.objects.create(name="race", url=registry.url, acceleration_enabled=True)
    base = {"base.bin": hashlib.shake_256(b"new base").digest(16 << 20)}  # incompressible: a while to convert
    digests = {repository: push_image(tmp_path / repository, f"{registry.host}/team/{repository}:1.0",
                                      [Platform(layers=[base, {"app": repository.encode()}])])
               for repository in ("one", "two")}
    workers = [celery_worker_factory(WORKER_CONCURRENCY="1") for _ in range(2)]
    with transaction.atomic():  # both enqueued at the same moment: each idle worker takes one
        jobs = [actions.request_conversion(instance, f"team/{repository}:1.0", digest)[0]
                for repository, digest in digests.items()]

    deadline = time.monotonic() + 180
    while ConversionJob.objects.exclude(status__in=[JobStatus.SUCCEEDED, JobStatus.FAILED]).exists():
        assert time.monotonic() < deadline, "the jobs did not finish"
        time.sleep(0.2)
    jobs = [ConversionJob.objects.get(pk=job.pk) for job in jobs]
    assert [job.status for job in jobs] == [JobStatus.SUCCEEDED] * 2, [job.reason for job in jobs]
    assert [len(re.findall(r"action=start ", worker.log())) for worker in workers] == [1, 1]  # one job each

    converted = sorted(int(re.search(r"(\d+) layer\(s\) converted", line["message"])[1])
                       for job in jobs for line in job.log if "layer(s) converted" in line["message"])
    assert converted == [1, 2]  # each its own top layer; the base only once
    base_digest = jobs[0].layers[0]["source_digest"]
    entry = LayerCacheEntry.objects.get(instance=instance, source_digest=base_digest)
    assert entry.hits == 1
    log, blob = registry.log(), entry.digest.replace("sha256:", "sha256(?::|%3A)")  # the colon may be escaped
    uploads = re.findall(rf'method=PUT \S+ http\.request\.uri="[^"]*digest={blob}"', log)
    mounts = re.findall(rf'method=POST \S+ http\.request\.uri="[^"]*mount={blob}&', log)
    assert (len(uploads), len(mounts)) == (1, 1)  # uploaded by one job, mounted into the other repository
    waited = [float(w) for worker in workers for w in re.findall(rf"layer={base_digest} action=layer-lock "
                                                                 r"waited=([\d.]+)", worker.log())]
    assert len(waited) == 2  # one took the lock on its miss, the other waited on it, then reused the layer


def test_a_conversion_runs_start_to_finish_while_another_session_holds_the_instance_row(
        transactional_db, instance, make_rule, reg, push):
    """Starting and finishing a job lock the job row only, and a delivery's lock on the instance
    (FOR NO KEY UPDATE) leaves the foreign-key checks of the job's writes alone. Either lock made a
    worker wait for, and deadlock with, a delivery that holds the instance and then locks the job:
    pipeline_burst saw "deadlock detected" at the COMMIT of a succeeding job while FOR UPDATE was
    the delivery's lock."""
    digest = push("team/app:1.0")
    job, _ = actions.request_conversion(instance, f"{reg.host}/team/app:1.0", digest, rule=make_rule())
    locked, release = threading.Event(), threading.Event()

    def holder():  # a delivery's own lock on the instance, held as a delivery holds it
        with transaction.atomic():
            actions._locked_for_delivery(instance.pk)
            locked.set()
            release.wait(60)

    held = in_other_session(holder)
    assert locked.wait(30)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '5s'")  # fail rather than hang if the job waits for it
        actions.run_conversion(job.pk)
    except OperationalError as error:
        pytest.fail(f"the job waited for the instance's row lock: {error}")
    finally:
        release.set()
        held.result(timeout=30)
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = 0")
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED and job.attempts == 1, job.reason


@contextlib.contextmanager
def twins_table_locked():
    """Another session holds the twins' table (ACCESS EXCLUSIVE) while this one waits at most 300 ms
    for a lock: the job's write of its twin times out, as under a deadlock or a long migration."""
    locked, release = threading.Event(), threading.Event()

    def holder():
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {AcceleratedImage._meta.db_table} IN ACCESS EXCLUSIVE MODE")
            locked.set()
            release.wait(60)

    held = in_other_session(holder)
    assert locked.wait(30)
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '300ms'")
    try:
        yield
    finally:
        release.set()
        held.result(timeout=30)
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")  # the settings' own, from the connection's options


LOCK_TIMEOUT = "The database refused a write (canceling statement due to lock timeout)."


def test_a_job_whose_write_times_out_on_a_lock_is_queued_again_and_then_succeeds(
        transactional_db, instance, make_rule, reg, push):
    digest = push("team/app:1.0")
    job, _ = actions.request_conversion(instance, f"{reg.host}/team/app:1.0", digest, rule=make_rule())
    with twins_table_locked(), pytest.raises(actions.RetryLater) as later:
        actions.run_conversion(job.pk)
    job.refresh_from_db()
    assert (job.status, job.attempts, job.retries, job.last_error) == (JobStatus.QUEUED, 1, 1, LOCK_TIMEOUT)
    assert job.log[-1]["message"] == f"Attempt 1 failed: {LOCK_TIMEOUT} Retrying in {later.value.countdown:.0f}s."
    assert actions.run_conversion(job.pk).status == JobStatus.SUCCEEDED
    job.refresh_from_db()
    assert job.attempts == 2 and job.twins.get().twin_tag == "1.0-apparate"


def test_a_job_whose_writes_keep_timing_out_fails_with_the_reason(transactional_db, instance, make_rule, reg, push,
                                                                   settings):
    settings.APPARATE_JOB_MAX_ATTEMPTS = 1
    digest = push("team/app:1.0")
    job, _ = actions.request_conversion(instance, f"{reg.host}/team/app:1.0", digest, rule=make_rule())
    with twins_table_locked():
        finished = actions.run_conversion(job.pk)
    assert (finished.status, finished.last_error) == (JobStatus.FAILED, LOCK_TIMEOUT)
    assert finished.reason == ("The database kept refusing the job's writes after 1 attempts (canceling statement due "
                               "to lock timeout). Check the database's health and the worker log, then retry the job.")
