"""App configuration for Kubernetes clusters, nodes, labelling, suite install and deploys."""

from django.apps import AppConfig


class ClustersConfig(AppConfig):
    name = "clusters"
    verbose_name = "Clusters"
