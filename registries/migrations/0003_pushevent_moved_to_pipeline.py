from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('registries', '0002_pushevent'),
        ('rules', '0004_jobs_moved_to_pipeline'),
    ]

    operations = [
        # The table stays; the model now belongs to the pipeline app (pipeline 0001).
        migrations.SeparateDatabaseAndState(state_operations=[
            migrations.DeleteModel(
                name='PushEvent',
            ),
        ]),
    ]
