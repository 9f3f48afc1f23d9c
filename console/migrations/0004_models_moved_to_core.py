from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('console', '0003_worker_heartbeat'),
    ]

    operations = [
        # The tables stay; the models now belong to the core app (core 0001).
        migrations.SeparateDatabaseAndState(state_operations=[
            migrations.RemoveField(
                model_name='auditentry',
                name='actor',
            ),
            migrations.DeleteModel(
                name='WorkerHeartbeat',
            ),
            migrations.DeleteModel(
                name='AuditEntry',
            ),
        ]),
    ]
