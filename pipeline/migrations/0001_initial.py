import django.db.models.deletion
import rules.models
from django.conf import settings
from django.db import migrations, models

from core.model_moves import move_content_types


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('contenttypes', '0002_remove_content_type_name'),
        ('registries', '0003_pushevent_moved_to_pipeline'),
        ('rules', '0004_jobs_moved_to_pipeline'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        # The tables were created by the registries and rules apps; only the models' app changes.
        migrations.SeparateDatabaseAndState(state_operations=[
            migrations.CreateModel(
                name='PushEvent',
                fields=[
                    ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                    ('received_at', models.DateTimeField(auto_now_add=True, db_index=True)),
                    ('source', models.CharField(choices=[('distribution', 'CNCF Distribution'), ('harbor', 'Harbor')], max_length=20)),
                    ('delivery_id', models.CharField(help_text="The registry's event id (derived from the payload for Harbor).", max_length=200)),
                    ('actor', models.CharField(blank=True, help_text='Who pushed, as the registry says.', max_length=255)),
                    ('namespace', models.CharField(blank=True, max_length=255)),
                    ('repository', models.CharField(help_text='Repository path below the namespace (may contain slashes).', max_length=1024)),
                    ('tag', models.CharField(blank=True, max_length=128)),
                    ('digest', models.CharField(blank=True, max_length=135)),
                    ('media_type', models.CharField(blank=True, max_length=255)),
                    ('outcome', models.CharField(choices=[('conversion_requested', 'Conversion requested'), ('skipped', 'Skipped')], max_length=30)),
                    ('reason', models.CharField(choices=[('rule_matched', 'A rule matched'), ('acceleration_off', 'Acceleration is off'), ('no_rule_matched', 'No enabled rule matched'), ('accelerated_tag', 'Tag is itself accelerated'), ('not_image_manifest', 'Not an image manifest'), ('already_seen', 'Already seen'), ('no_tag', 'Pushed by digest, without a tag'), ('invalid_reference', 'Not a valid image address')], max_length=30)),
                    ('reason_detail', models.TextField(help_text='The decision explained, as shown on the Events page.', verbose_name='why')),
                    ('instance', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='push_events', to='registries.instance')),
                    ('matched_rule', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='push_events', to='rules.rule')),
                ],
                options={
                    'db_table': 'registries_pushevent',
                    'ordering': ['-received_at', '-id'],
                },
            ),
            migrations.CreateModel(
                name='ConversionJob',
                fields=[
                    ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                    ('namespace', models.CharField(max_length=255)),
                    ('repository', models.CharField(help_text='Repository path below the namespace.', max_length=1024)),
                    ('source_tag', models.CharField(max_length=128)),
                    ('source_digest', models.CharField(max_length=135)),
                    ('trigger', models.CharField(choices=[('webhook', 'Push webhook'), ('reconciler', 'Reconciler'), ('backfill', 'Convert existing images'), ('manual', 'Convert now')], default='webhook', max_length=20)),
                    ('format', models.CharField(choices=[('estargz', 'eStargz')], default='estargz', max_length=20)),
                    ('options', models.JSONField(default=rules.models.default_options, help_text='Options snapshot taken when requested.')),
                    ('options_key', models.CharField(editable=False, max_length=64)),
                    ('status', models.CharField(choices=[('queued', 'Queued'), ('running', 'Running'), ('succeeded', 'Succeeded'), ('failed', 'Failed'), ('skipped', 'Skipped'), ('cancelled', 'Cancelled')], db_index=True, default='queued', max_length=20)),
                    ('attempts', models.PositiveIntegerField(default=0)),
                    ('retries', models.PositiveIntegerField(default=0, help_text='Automatic retries after transient failures.')),
                    ('last_error', models.TextField(blank=True)),
                    ('reason', models.TextField(blank=True, help_text='Why the job failed or was skipped, in words a person can act on.')),
                    ('created_at', models.DateTimeField(auto_now_add=True, db_index=True)),
                    ('updated_at', models.DateTimeField(auto_now=True)),
                    ('started_at', models.DateTimeField(blank=True, null=True)),
                    ('finished_at', models.DateTimeField(blank=True, null=True)),
                    ('bytes_in', models.BigIntegerField(default=0, help_text='Compressed source bytes read.')),
                    ('bytes_out', models.BigIntegerField(default=0, help_text='eStargz bytes written (or reused).')),
                    ('bytes_total', models.BigIntegerField(default=0, help_text='Compressed size of the source layers seen so far.')),
                    ('layers', models.JSONField(blank=True, default=list, help_text='Per-layer progress, in image order.')),
                    ('log', models.JSONField(blank=True, default=list, help_text='The last 300 log lines.')),
                    ('twin_tags', models.JSONField(blank=True, default=list, help_text='Further source tags of the same content; each gets its own <tag><suffix> pointing at the result.')),
                    ('result_tag', models.CharField(blank=True, max_length=128)),
                    ('result_digest', models.CharField(blank=True, max_length=135)),
                    ('result_size', models.BigIntegerField(blank=True, help_text='Total size of the accelerated image.', null=True)),
                    ('instance', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='jobs', to='registries.instance')),
                    ('requested_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                    ('rule', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='jobs', to='rules.rule')),
                    ('event', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='jobs', to='pipeline.pushevent')),
                ],
                options={
                    'db_table': 'rules_conversionjob',
                    'ordering': ['-created_at', '-id'],
                },
            ),
            migrations.CreateModel(
                name='LayerCacheEntry',
                fields=[
                    ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                    ('source_digest', models.CharField(max_length=135)),
                    ('cache_key', models.CharField(max_length=512)),
                    ('converter_version', models.CharField(max_length=40)),
                    ('registry', models.CharField(help_text='host[:port] the blob was uploaded to.', max_length=255)),
                    ('repository', models.CharField(help_text='namespace/repository holding the blob.', max_length=1024)),
                    ('digest', models.CharField(max_length=135)),
                    ('size', models.BigIntegerField()),
                    ('diff_id', models.CharField(max_length=135)),
                    ('toc_digest', models.CharField(max_length=135)),
                    ('uncompressed_size', models.BigIntegerField()),
                    ('hits', models.PositiveIntegerField(default=0)),
                    ('created_at', models.DateTimeField(auto_now_add=True)),
                    ('used_at', models.DateTimeField(auto_now=True)),
                    ('instance', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='layer_cache', to='registries.instance')),
                ],
                options={
                    'verbose_name_plural': 'layer cache entries',
                    'db_table': 'rules_layercacheentry',
                    'ordering': ['-used_at'],
                    'constraints': [models.UniqueConstraint(fields=('instance', 'source_digest', 'cache_key'), name='rules_layercacheentry_unique_key')],
                },
            ),
            migrations.AddIndex(
                model_name='pushevent',
                index=models.Index(fields=['instance', 'delivery_id'], name='registries__instanc_8622ff_idx'),
            ),
            migrations.AddConstraint(
                model_name='pushevent',
                constraint=models.UniqueConstraint(condition=models.Q(('outcome', 'conversion_requested')), fields=('instance', 'namespace', 'repository', 'digest'), name='registries_pushevent_one_conversion_per_digest'),
            ),
            migrations.AddIndex(
                model_name='conversionjob',
                index=models.Index(fields=['instance', 'namespace', 'repository', 'source_tag'], name='rules_conve_instanc_0ae863_idx'),
            ),
            migrations.AddConstraint(
                model_name='conversionjob',
                constraint=models.UniqueConstraint(fields=('instance', 'namespace', 'repository', 'source_digest', 'format', 'options_key'), name='rules_conversionjob_unique_conversion', violation_error_message='This image is already converted (or queued) with these options.'),
            ),
        ]),
        migrations.RunPython(move_content_types('registries', 'pipeline', ('pushevent',)), migrations.RunPython.noop),
        migrations.RunPython(move_content_types('rules', 'pipeline', ('conversionjob', 'layercacheentry')), migrations.RunPython.noop),
    ]
