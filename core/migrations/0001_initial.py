import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

from core.model_moves import move_content_types


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('console', '0004_models_moved_to_core'),
        ('contenttypes', '0002_remove_content_type_name'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        # The tables were created by the console app; only the models' app changes.
        migrations.SeparateDatabaseAndState(state_operations=[
            migrations.CreateModel(
                name='WorkerHeartbeat',
                fields=[
                    ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                    ('hostname', models.CharField(max_length=255, unique=True)),
                    ('seen_at', models.DateTimeField()),
                ],
                options={
                    'db_table': 'console_workerheartbeat',
                    'ordering': ['-seen_at'],
                },
            ),
            migrations.CreateModel(
                name='AuditEntry',
                fields=[
                    ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                    ('timestamp', models.DateTimeField(auto_now_add=True, db_index=True)),
                    ('actor_name', models.CharField(max_length=150)),
                    ('source', models.CharField(choices=[('ui', 'Web UI'), ('api', 'API'), ('admin', 'Admin'), ('system', 'System')], max_length=10)),
                    ('action', models.CharField(choices=[('create', 'Created'), ('update', 'Changed'), ('delete', 'Deleted')], max_length=10)),
                    ('app_label', models.CharField(max_length=100)),
                    ('model', models.CharField(max_length=100)),
                    ('object_id', models.CharField(max_length=64)),
                    ('object_repr', models.CharField(max_length=200)),
                    ('changes', models.JSONField(blank=True, default=dict)),
                    ('actor', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, to=settings.AUTH_USER_MODEL)),
                ],
                options={
                    'verbose_name_plural': 'audit entries',
                    'db_table': 'console_auditentry',
                    'ordering': ['-timestamp', '-id'],
                    'indexes': [models.Index(fields=['app_label', 'model', 'object_id'], name='console_aud_app_lab_fd14d2_idx')],
                },
            ),
        ]),
        migrations.RunPython(move_content_types('console', 'core', ('auditentry', 'workerheartbeat')), migrations.RunPython.noop),
    ]
