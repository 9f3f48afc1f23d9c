from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('rules', '0003_conversionjob_twin_tags'),
    ]

    operations = [
        # The tables stay; the models now belong to the pipeline app (pipeline 0001).
        migrations.SeparateDatabaseAndState(state_operations=[
            migrations.RemoveField(
                model_name='layercacheentry',
                name='instance',
            ),
            migrations.DeleteModel(
                name='ConversionJob',
            ),
            migrations.DeleteModel(
                name='LayerCacheEntry',
            ),
        ]),
        migrations.AlterField(
            model_name='rule',
            name='compression',
            field=models.CharField(choices=[('best', 'Best (smallest blobs)'), ('fast', 'Fast (quicker conversion, bigger blobs)')], default='best', help_text="Best: gzip level 9 (zlib-ng), the smallest blobs and the slowest conversion. Fast: zlib-ng's fast level, converts about twice as fast for blobs a few % bigger.", max_length=10),
        ),
    ]
