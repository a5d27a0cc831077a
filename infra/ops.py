"""Ops: the SNS topic (failures, pending approvals, alarms), the idempotency table, dead-letter
queues, alarms and the CloudWatch dashboard.

* Topic: encrypted with the stack key (CloudWatch may use it: see ``data.Data``), TLS-only publishing.
* Idempotency table (powertools idempotency, ``lambdas/_common.py``): partition key ``id``, TTL on
  ``expiration``, on-demand capacity, point-in-time recovery, KMS.
* One DLQ per rule target (``dlq(name)``), 14-day retention, KMS, TLS-only; an alarm fires on any
  visible message.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from .iam import ack
from .params import Params


class Ops(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, params: Params, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        self.params = params
        self.key = key
        self.topic = sns.Topic(self, "Topic", topic_name=f"{params.prefix}-notifications",
                               display_name="ocrloop notifications", master_key=key, enforce_ssl=True)
        if params.alarm_email:
            self.topic.add_subscription(subs.EmailSubscription(params.alarm_email))
        self.table = dynamodb.Table(
            self, "Idempotency",
            table_name=f"{params.prefix}-idempotency",
            partition_key=dynamodb.Attribute(name="id", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            time_to_live_attribute="expiration",
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True),
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=key,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        self.action = cw_actions.SnsAction(self.topic)
        self.alarms: list[cw.Alarm] = []
        self.queues: dict[str, sqs.Queue] = {}
        self.functions: dict[str, lambda_.IFunction] = {}

    def dlq(self, name: str) -> sqs.Queue:
        """The dead-letter queue ``<prefix>-<name>-dlq`` with its depth alarm."""
        queue = sqs.Queue(
            self, f"{name}-dlq",
            queue_name=f"{self.params.prefix}-{name}-dlq",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=self.key,
            data_key_reuse=Duration.hours(1),
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        ack(queue, "AwsSolutions-SQS3",
            f"This queue is itself the dead-letter queue of the {name} EventBridge target and function; "
            "messages left here are inspected by an operator (alarm on depth), not redriven again.")
        alarm = cw.Alarm(
            self, f"{name}-dlq-depth",
            alarm_name=f"{self.params.prefix}-{name}-dlq-not-empty",
            alarm_description=f"Events for {name} failed after all retries; see the queue {queue.queue_name}.",
            metric=queue.metric_approximate_number_of_messages_visible(period=Duration.minutes(5), statistic="Maximum"),
            threshold=0, comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1, treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(self.action)
        self.alarms.append(alarm)
        self.queues[name] = queue
        return queue

    def watch_function(self, name: str, fn: lambda_.IFunction) -> None:
        """Alarm on any error of ``fn`` (a handler that raises is retried, then dead-lettered)."""
        alarm = cw.Alarm(
            self, f"{name}-errors",
            alarm_name=f"{self.params.prefix}-{name}-errors",
            alarm_description=f"The {name} function raised; it retries, then dead-letters the event.",
            metric=fn.metric_errors(period=Duration.minutes(5), statistic="Sum"),
            threshold=0, comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1, treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(self.action)
        self.alarms.append(alarm)
        self.functions[name] = fn

    def dashboard(self, endpoint_widgets: list[cw.IWidget], extra: list[cw.IWidget]) -> cw.Dashboard:
        """One dashboard: loop function invocations/errors, DLQ depths, endpoint, search, API."""
        board = cw.Dashboard(self, "Dashboard", dashboard_name=f"{self.params.prefix}-loop",
                             default_interval=Duration.days(7))
        board.add_widgets(
            cw.GraphWidget(title="Loop functions: invocations", width=12,
                           left=[fn.metric_invocations(label=n, period=Duration.hours(1)) for n, fn in self.functions.items()]),
            cw.GraphWidget(title="Loop functions: errors", width=12,
                           left=[fn.metric_errors(label=n, period=Duration.hours(1)) for n, fn in self.functions.items()]),
        )
        board.add_widgets(
            cw.GraphWidget(title="Dead-letter queues (visible messages)", width=12,
                           left=[q.metric_approximate_number_of_messages_visible(label=n) for n, q in self.queues.items()]),
            cw.AlarmStatusWidget(title="Alarms", width=12, alarms=self.alarms),
        )
        if endpoint_widgets:
            board.add_widgets(*endpoint_widgets)
        if extra:
            board.add_widgets(*extra)
        return board
