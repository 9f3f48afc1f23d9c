from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('core', '0001_initial'),
    ]

    operations = [
        migrations.AddField(
            model_name='workerheartbeat',
            name='session',
            field=models.CharField(blank=True, help_text='Random id of the worker run that reported.', max_length=32),
        ),
    ]
