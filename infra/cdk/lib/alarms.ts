//! KeyturnAlarms: failures that reach someone, as infra/template.yaml notifies them. One SNS
//! topic (given, or made here and encrypted with a key of its own) receives CloudWatch
//! alarms on each rotation function's errors and on the reaper (failed runs, no runs,
//! failed revocations), and an EventBridge rule on Secrets Manager's RotationFailed and
//! RotationAbandoned events for the rotated secrets.

import { ArnFormat, Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as events from 'aws-cdk-lib/aws-events';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sns from 'aws-cdk-lib/aws-sns';
import { Construct } from 'constructs';
import { KeyturnCredentialsApi } from './credentials-api';
import { prefixOf } from './function';
import { skipLinters } from './nag';
import { KeyturnRotationFunction } from './rotation';

export interface KeyturnAlarmsProps {
  /**
   * The prefix of the functions' names, which the alarms' and the rule's names start with
   * (the topic's policy admits publishers named so).
   *
   * @default 'keyturn'
   */
  readonly functionNamePrefix?: string;
  /**
   * The topic to notify. It must let events.amazonaws.com and cloudwatch.amazonaws.com
   * publish, and its KMS key, if any, let both use it.
   *
   * @default - a topic `<prefix>-alarms`, encrypted with a KMS key of its own, which only
   * this stack's rules and alarms may publish to, over TLS
   */
  readonly topic?: sns.ITopic;
  /** Rotation functions whose failed invocations raise an alarm each. */
  readonly rotationFunctions?: KeyturnRotationFunction[];
  /**
   * The names (a pattern such as `prod/*`) of the secrets whose failed or abandoned
   * rotations are reported (`?` matches as `*`: EventBridge's wildcard knows `*` only).
   *
   * @default - no rule
   */
  readonly secretNamePattern?: string;
  /** The dynamic credentials, whose reaper raises alarms when it fails, stops or cannot revoke. */
  readonly credentials?: KeyturnCredentialsApi;
}

/** The alarms, the RotationFailed rule and the topic they notify. */
export class KeyturnAlarms extends Construct {
  /** The topic every alarm and the rule notify. */
  public readonly topic: sns.ITopic;

  constructor(scope: Construct, id: string, props: KeyturnAlarmsProps) {
    super(scope, id);
    const stack = Stack.of(this);
    const prefix = prefixOf(props);
    this.topic = props.topic ?? this.createTopic(prefix);
    const action = new actions.SnsAction(this.topic);

    const alarm = (alarmId: string, alarmProps: cloudwatch.AlarmProps) => {
      const made = new cloudwatch.Alarm(this, alarmId, alarmProps);
      made.addAlarmAction(action);
      made.addOkAction(action);
      return made;
    };
    // Lambda's failed invocations of one function, summed over 5 minutes.
    const errors = (fn: lambda.IFunction, name: string, description: string) =>
      alarm(`${name}Errors`, {
        alarmName: `${prefix}-${name}-errors`,
        alarmDescription: description,
        metric: fn.metricErrors({ period: Duration.minutes(5), statistic: 'Sum' }),
        threshold: 0,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluationPeriods: 1,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      });

    // A rotation function runs only when Secrets Manager rotates: no data is its usual
    // state, hence not breaching. Secrets Manager retries a failed step, so the alarm may
    // come before a rotation succeeds on retry; the rule says when it gave up.
    for (const rotation of props.rotationFunctions ?? []) {
      const name = rotation.functionName.slice(prefix.length + 1);
      errors(rotation.function, name, `keyturn - a rotation step of ${name} failed (docs/operations.md, A stuck rotation)`);
    }

    if (props.secretNamePattern !== undefined) {
      const secrets = stack.formatArn({
        service: 'secretsmanager',
        resource: 'secret',
        resourceName: props.secretNamePattern.replace(/\?/g, '*'),
        arnFormat: ArnFormat.COLON_RESOURCE_NAME,
      });
      const rule = new events.Rule(this, 'RotationFailedRule', {
        ruleName: `${prefix}-rotation-failed`,
        description: 'keyturn - Secrets Manager reports a rotation failed or abandoned for the secrets of SecretNamePattern',
        enabled: true,
        // CloudTrail service events, which EventBridge's default bus receives without a trail.
        eventPattern: {
          source: ['aws.secretsmanager'],
          detailType: ['AWS Service Event via CloudTrail'],
          detail: {
            eventSource: ['secretsmanager.amazonaws.com'],
            eventName: ['RotationFailed', 'RotationAbandoned'],
            additionalEventData: { SecretId: events.Match.wildcard(secrets) },
          },
        },
        // The topic's policy admits this stack's rules already: a target of its own adds no
        // second grant.
        targets: [{ bind: () => ({ id: 'AlarmTopic', arn: this.topic.topicArn }) }],
      });
      skipLinters(rule.node.defaultChild as events.CfnRule, [], [
        // EventBridge retries delivery to the topic for 24 hours; a dead-letter queue for
        // what the operators' own topic refuses would be one more place nobody reads.
        'ES4000',
      ]);
    }

    if (props.credentials) {
      const reaper = props.credentials.reapFunction;
      // A failed run (also in the dead-letter queue). Missing data means no run, which the
      // next alarm reports.
      errors(reaper, 'reap-leases', 'keyturn - a reap-leases run failed (docs/operations.md, The reaper stopped)');
      // Runs every minute: none for 5 minutes means its schedule is disabled or deleted, or
      // Scheduler cannot assume its role; Lambda publishes nothing then, hence breaching.
      alarm('ReapLeasesNotRunning', {
        alarmName: `${prefix}-reap-leases-not-running`,
        alarmDescription: 'keyturn - reap-leases was not invoked for 5 minutes (docs/operations.md, The reaper stopped)',
        metric: reaper.metricInvocations({ period: Duration.minutes(5), statistic: 'Sum' }),
        threshold: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
        evaluationPeriods: 1,
        treatMissingData: cloudwatch.TreatMissingData.BREACHING,
      });
      // The reaper's own metric (EMF, one data point per run, zeros included): any failed
      // revocation in an hour (1 of 12 five-minute periods) raises it; an hour without one
      // clears it, while a revocation that keeps failing (retried at most an hour apart)
      // keeps it up. Missing data means no run: not breaching here.
      alarm('ReapLeasesRevocationsFailed', {
        alarmName: `${prefix}-reap-leases-revocations-failed`,
        alarmDescription:
          'keyturn - reap-leases failed to revoke a lease in the last hour; it retries (docs/operations.md, A failed revocation)',
        metric: new cloudwatch.Metric({
          namespace: 'keyturn',
          metricName: 'RevocationsFailed',
          dimensionsMap: { FunctionName: reaper.functionName },
          period: Duration.minutes(5),
          statistic: 'Sum',
        }),
        threshold: 0,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluationPeriods: 12,
        datapointsToAlarm: 1,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      });
    }
  }

  // EventBridge and CloudWatch publish to an encrypted topic only with a customer managed key
  // whose policy lets them (the AWS managed key aws/sns cannot): a key of the topic's own.
  private createTopic(prefix: string): sns.Topic {
    const stack = Stack.of(this);
    const key = new kms.Key(this, 'AlarmTopicKey', {
      description: `keyturn: encrypts the ${prefix}-alarms topic`,
      enableKeyRotation: true,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    key.addToResourcePolicy(
      new iam.PolicyStatement({
        actions: ['kms:Decrypt', 'kms:GenerateDataKey*'],
        principals: [new iam.ServicePrincipal('events.amazonaws.com'), new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
        resources: ['*'],
      }),
    );
    const topic = new sns.Topic(this, 'AlarmTopic', { topicName: `${prefix}-alarms`, masterKey: key, enforceSSL: true });
    // Only this stack's rules and alarms, named from the prefix.
    const publisher = (service: string, resource: string) =>
      new iam.PolicyStatement({
        actions: ['sns:Publish'],
        principals: [new iam.ServicePrincipal(`${service}.amazonaws.com`)],
        resources: [topic.topicArn],
        conditions: {
          ArnLike: {
            'aws:SourceArn': stack.formatArn({ service, resource, resourceName: `${prefix}-*`, arnFormat: resource === 'alarm' ? ArnFormat.COLON_RESOURCE_NAME : ArnFormat.SLASH_RESOURCE_NAME }),
          },
        },
      });
    topic.addToResourcePolicy(publisher('events', 'rule'));
    topic.addToResourcePolicy(publisher('cloudwatch', 'alarm'));
    return topic;
  }
}
