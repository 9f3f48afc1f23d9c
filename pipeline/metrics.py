"""Prometheus metrics of the pipeline, computed from the database at scrape time.

Web processes and workers are separate processes, so in-process counters would each see only a
part; the job, twin and event rows are the truth, and every figure below is a query over them:
jobs by state, conversion duration (first start to finish, retries included) and bytes of
succeeded jobs, automatic retries, layer cache hits, accelerated images by state and the storage
of those present, webhook events by outcome and reason.
`metrics_view` serves them at /metrics to a logged-in viewer or with the bearer token
APPARATE_METRICS_TOKEN (for Prometheus); anything else gets 401.
"""

import hmac
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from django.http import HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from core.roles import Role, has_role
from pipeline import twins
from pipeline.choices import JobStatus, TwinState
from pipeline.models import AcceleratedImage, ConversionJob, LayerCacheEntry, PushEvent

DURATION_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class PipelineCollector:
    """A prometheus_client collector that reads the current figures from the database."""

    def collect(self):
        jobs = GaugeMetricFamily("apparate_jobs", "Conversion jobs by state.", labels=["state"])
        counts = dict(ConversionJob.objects.values_list("status").annotate(n=Count("id")))
        for state in JobStatus.values:
            jobs.add_metric([state], counts.get(state, 0))
        yield jobs

        succeeded = ConversionJob.objects.filter(status=JobStatus.SUCCEEDED, started_at__isnull=False,
                                                 finished_at__isnull=False).annotate(
            took=ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField()))
        figures = succeeded.aggregate(
            count=Count("id"), took_sum=Sum("took"), read=Sum("bytes_in"), written=Sum("bytes_out"),
            **{f"le_{bound}": Count("id", filter=Q(took__lte=timedelta(seconds=bound))) for bound in DURATION_BUCKETS},
        )
        buckets = [(str(float(bound)), figures[f"le_{bound}"]) for bound in DURATION_BUCKETS]
        buckets.append(("+Inf", figures["count"]))
        took = figures["took_sum"].total_seconds() if figures["took_sum"] else 0.0
        yield HistogramMetricFamily("apparate_conversion_duration_seconds",
                                    "Time from a job's first start to its success.", buckets=buckets, sum_value=took)
        converted = CounterMetricFamily("apparate_conversion_bytes", "Bytes read and written by succeeded jobs.",
                                        labels=["direction"])
        converted.add_metric(["in"], figures["read"] or 0)
        converted.add_metric(["out"], figures["written"] or 0)
        yield converted

        totals = ConversionJob.objects.aggregate(retries=Sum("retries"), attempts=Sum("attempts"))
        yield CounterMetricFamily("apparate_job_retries", "Automatic retries after transient registry failures.",
                                  value=totals["retries"] or 0)
        yield CounterMetricFamily("apparate_job_attempts", "Job attempts started.", value=totals["attempts"] or 0)
        yield CounterMetricFamily("apparate_layer_cache_hits", "Layers reused from the layer cache.",
                                  value=LayerCacheEntry.objects.aggregate(hits=Sum("hits"))["hits"] or 0)

        images = GaugeMetricFamily("apparate_accelerated_images", "Accelerated images (twin tags) by state.",
                                   labels=["state"])
        states = dict(AcceleratedImage.objects.values_list("state").annotate(n=Count("id")).order_by())
        for state in TwinState.values:
            images.add_metric([state], states.get(state, 0))
        yield images
        yield GaugeMetricFamily("apparate_accelerated_bytes", "Registry storage of the accelerated images present "
                                "(a manifest shared by several twin tags counts once).",
                                value=twins.storage(AcceleratedImage.objects.all()).bytes)

        events = CounterMetricFamily("apparate_webhook_events", "Stored push events by outcome and reason.",
                                     labels=["outcome", "reason"])
        for outcome, reason, count in (PushEvent.objects.values_list("outcome", "reason")
                                       .annotate(n=Count("id")).order_by("outcome", "reason")):
            events.add_metric([outcome, reason], count)
        yield events


def _authorized(request) -> bool:
    token = settings.APPARATE_METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and header.startswith("Bearer "):
        return hmac.compare_digest(header[7:].strip().encode(), token.encode())
    return has_role(request.user, Role.VIEWER)


def metrics_view(request):
    if not _authorized(request):
        response = HttpResponse("Log in as a viewer or send 'Authorization: Bearer <APPARATE_METRICS_TOKEN>'.\n",
                                status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="apparate metrics"'
        return response
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
