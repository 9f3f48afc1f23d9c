"""Domain verbs of the clusters app, one module per concern: sync, labelling, suite, deploy.

Views, the API and tasks call these. Outbound calls go through clusters.kube only. Machine-written
fields (connection status, node facts, job progress) are written with queryset updates or on
models that opt out of the audit log; every operator request (labelling, suite operations,
deploys) is audited when it is made.
"""
