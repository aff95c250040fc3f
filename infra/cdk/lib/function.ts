//! What every keyturn function shares: the prebuilt binary as its code (no second cargo
//! build), the runtime, memory, log configuration and role shape of infra/template.yaml, and
//! the options that choose them.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { ArnFormat, BundlingOptions, Duration, ILocalBundling, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { RustFunction } from 'cargo-lambda-cdk';
import { Construct } from 'constructs';
import { acknowledgeManagedPolicy, LintSkip, LOGS_NOT_KMS, skipLinters } from './nag';

/** keyturn's four function binaries, each its own package under functions/. */
export type KeyturnBinary = 'rotate-database' | 'rotate-iam-key' | 'issue-credentials' | 'reap-leases';

/** Options every keyturn construct takes for the functions it creates. */
export interface KeyturnFunctionOptions {
  /**
   * The directory of the built functions: `<dir>/<binary>/bootstrap` for each binary it
   * deploys (`make package` writes them to dist/lambda). Nothing is compiled at synth.
   *
   * @default - the `KEYTURN_LAMBDA_DIR` environment variable, else the context value
   * `keyturn:lambdaDir`
   */
  readonly lambdaDir?: string;
  /**
   * The keyturn checkout, whose functions/<binary>/Cargo.toml cargo-lambda-cdk reads for
   * the package name.
   *
   * @default - the checkout this file is in
   */
  readonly sourceDir?: string;
  /**
   * The functions' architecture; the binaries in `lambdaDir` must be built for it.
   *
   * @default lambda.Architecture.X86_64
   */
  readonly architecture?: lambda.Architecture;
  /**
   * Prefix of the functions' names (`<prefix>-database-single-user`, ...). The names are
   * set, not generated, so each function's policy can name its own ARN; one prefix per
   * account and region.
   *
   * @default 'keyturn'
   */
  readonly functionNamePrefix?: string;
  /**
   * A Secrets Manager endpoint URL (a VPC endpoint's); none for the regional default.
   *
   * @default - the regional endpoint
   */
  readonly secretsManagerEndpoint?: string;
  /**
   * How long the functions' logs (and the credentials API's access log) are kept.
   *
   * @default logs.RetentionDays.ONE_YEAR
   */
  readonly logRetention?: logs.RetentionDays;
}

/** The network of a function that reaches databases. */
export interface KeyturnNetworkProps {
  /** The VPC of the databases. */
  readonly vpc?: ec2.IVpc;
  /**
   * Subnets with a route to the databases and to Secrets Manager (and for the credentials
   * functions to DynamoDB, IAM and STS).
   *
   * @default - the VPC's private subnets
   */
  readonly vpcSubnets?: ec2.SubnetSelection;
  /**
   * Security groups allowing the function to reach the databases' ports.
   *
   * @default - a new security group (CDK's default for a function in a VPC)
   */
  readonly securityGroups?: ec2.ISecurityGroup[];
}

// The checkout's root, from lib/ or from build/lib/ (tsc's output).
function defaultSourceDir(): string {
  for (const up of ['../../..', '../../../..']) {
    const dir = path.resolve(__dirname, up);
    if (fs.existsSync(path.join(dir, 'functions')) && fs.existsSync(path.join(dir, 'Cargo.toml'))) {
      return dir;
    }
  }
  throw new Error(`keyturn: no keyturn checkout above ${__dirname}: set sourceDir`);
}

export function prefixOf(options: KeyturnFunctionOptions): string {
  const prefix = options.functionNamePrefix ?? 'keyturn';
  // As the SAM template's AllowedPattern: the names must stay valid function names.
  if (!/^[A-Za-z0-9_-]{1,30}$/.test(prefix)) {
    throw new Error(`keyturn: functionNamePrefix ${JSON.stringify(prefix)} must match ^[A-Za-z0-9_-]{1,30}$`);
  }
  return prefix;
}

function lambdaDirOf(scope: Construct, options: KeyturnFunctionOptions): string {
  const dir = options.lambdaDir ?? process.env.KEYTURN_LAMBDA_DIR ?? scope.node.tryGetContext('keyturn:lambdaDir');
  if (!dir) {
    throw new Error(
      'keyturn: where are the built functions? Set KEYTURN_LAMBDA_DIR (or lambdaDir) to a directory of <function>/bootstrap, such as dist/lambda from `make package`',
    );
  }
  return path.resolve(dir);
}

// ELF e_machine of each architecture: a binary built for the other one would deploy and
// then fail at every invocation with an exec format error.
const ELF_MACHINE: Record<string, number> = { x86_64: 0x3e, arm64: 0xb7 };

/**
 * Checks a prebuilt bootstrap: present, an ELF executable, for the function's
 * architecture. Returns a description of what is wrong, or undefined.
 */
export function checkBootstrap(file: string, architecture: lambda.Architecture): string | undefined {
  let head: Buffer;
  try {
    const fd = fs.openSync(file, 'r');
    try {
      head = Buffer.alloc(20);
      fs.readSync(fd, head, 0, 20, 0);
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return `${file} not found: build the functions (make package) or point KEYTURN_LAMBDA_DIR at them`;
  }
  if (head.subarray(0, 4).toString('latin1') !== '\x7fELF') {
    return `${file} is not an ELF executable`;
  }
  const want = ELF_MACHINE[architecture.name];
  if (want !== undefined && head.readUInt16LE(18) !== want) {
    return `${file} is not built for ${architecture.name} (ELF machine 0x${head.readUInt16LE(18).toString(16)})`;
  }
  return undefined;
}

/**
 * cargo-lambda-cdk's RustFunction always bundles by running `cargo lambda build`, and has no
 * option for a binary built already. Its `bundling.dockerOptions.local` replaces the local
 * bundler it would run: this one copies the prebuilt bootstrap and reports the bundling done,
 * so neither cargo nor Docker runs at synth. The asset hash is then the binary's own
 * (AssetHashType.OUTPUT, RustFunction's default): a changed binary is a new deployment.
 */
class PrebuiltBootstrap implements ILocalBundling {
  constructor(private readonly file: string) {}

  tryBundle(outputDir: string, _options: BundlingOptions): boolean {
    const target = path.join(outputDir, 'bootstrap');
    fs.copyFileSync(this.file, target);
    fs.chmodSync(target, 0o755);
    return true;
  }
}

/** A function's role: its execution role as SAM makes it, with one inline policy. */
export interface KeyturnRole {
  readonly role: iam.Role;
  /**
   * The role's inline policy. Statements added to it later (one rotated secret's, say)
   * are rendered with it: an inline policy, as SAM's, and no separate AWS::IAM::Policy.
   */
  readonly policy: iam.PolicyDocument;
}

export function keyturnRole(scope: Construct, id: string, inVpc: boolean): KeyturnRole {
  const policy = new iam.PolicyDocument();
  // The managed policies SAM gives each function of infra/template.yaml.
  const logs = iam.ManagedPolicy.fromAwsManagedPolicyName('service-role/AWSLambdaBasicExecutionRole');
  const eni = iam.ManagedPolicy.fromAwsManagedPolicyName('service-role/AWSLambdaVPCAccessExecutionRole');
  const role = new iam.Role(scope, id, {
    assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
    managedPolicies: inVpc ? [logs, eni] : [logs],
    inlinePolicies: { keyturn: policy },
  });
  acknowledgeManagedPolicy(
    role,
    logs,
    "Lambda's own log writes (logs:CreateLogGroup, CreateLogStream, PutLogEvents), as SAM attaches to every function of infra/template.yaml.",
  );
  if (inVpc) {
    acknowledgeManagedPolicy(
      role,
      eni,
      'The network interfaces Lambda creates to run the function in the VPC (ec2:CreateNetworkInterface and its Describe/Delete), as infra/template.yaml attaches.',
    );
  }
  return { role, policy };
}

export interface KeyturnFunctionProps extends KeyturnFunctionOptions, KeyturnNetworkProps {
  readonly binary: KeyturnBinary;
  /** The name after the prefix: `<prefix>-<name>`. */
  readonly name: string;
  readonly description: string;
  readonly timeout: Duration;
  readonly role: iam.IRole;
  readonly environment: Record<string, string>;
  readonly layers?: lambda.ILayerVersion[];
  /** The checkov checks skipped on this function, as on the template's. */
  readonly checkov: LintSkip[];
}

/** The ARN of `<prefix>-<name>`, built from the name: usable in the function's own policy. */
export function functionArnOf(scope: Construct, prefix: string, name: string): string {
  return Stack.of(scope).formatArn({
    service: 'lambda',
    resource: 'function',
    resourceName: `${prefix}-${name}`,
    arnFormat: ArnFormat.COLON_RESOURCE_NAME,
  });
}

/** One keyturn function, as the SAM template's Globals and its function define it. */
export function keyturnFunction(scope: Construct, id: string, props: KeyturnFunctionProps): lambda.Function {
  const architecture = props.architecture ?? lambda.Architecture.X86_64;
  const bootstrap = path.join(lambdaDirOf(scope, props), props.binary, 'bootstrap');
  const problem = checkBootstrap(bootstrap, architecture);
  if (problem) {
    throw new Error(`keyturn: ${problem}`);
  }
  const environment = { ...props.environment };
  if (props.secretsManagerEndpoint) {
    environment.SECRETS_MANAGER_ENDPOINT = props.secretsManagerEndpoint;
  }
  const functionName = `${prefixOf(props)}-${props.name}`;
  // The function's log group, made here so that its retention is set (Lambda would otherwise
  // create one kept forever). It outlives the stack, as the record of what the function did,
  // and so that a group Lambda made for an older stack can be imported.
  const logGroup = new logs.LogGroup(scope, `${id}Logs`, {
    logGroupName: `/aws/lambda/${functionName}`,
    retention: props.logRetention ?? logs.RetentionDays.ONE_YEAR,
    removalPolicy: RemovalPolicy.RETAIN,
  });
  const fn = new RustFunction(scope, id, {
    manifestPath: path.join(props.sourceDir ?? defaultSourceDir(), 'functions', props.binary, 'Cargo.toml'),
    binaryName: props.binary,
    runtime: 'provided.al2023',
    bundling: { architecture, dockerOptions: { local: new PrebuiltBootstrap(bootstrap) } },
    architecture,
    functionName,
    description: props.description,
    memorySize: 128,
    timeout: props.timeout,
    role: props.role,
    environment,
    layers: props.layers,
    vpc: props.vpc,
    vpcSubnets: props.vpc ? props.vpcSubnets : undefined,
    securityGroups: props.vpc ? props.securityGroups : undefined,
    logGroup,
    loggingFormat: lambda.LoggingFormat.JSON,
    applicationLogLevelV2: lambda.ApplicationLogLevel.INFO,
    systemLogLevelV2: lambda.SystemLogLevel.WARN,
  });
  skipLinters(fn.node.defaultChild as lambda.CfnFunction, props.checkov, [
    // X-Ray: keyturn writes no segments; Lambda's own REPORT line and the request id in
    // every log line tell the same.
    'WS1000',
    // CDK's Function depends on its role explicitly besides naming it (GetAtt), which
    // cfn-lint reports as redundant; it changes nothing.
    'W3005',
  ]);
  skipLinters(logGroup.node.defaultChild as logs.CfnLogGroup, [LOGS_NOT_KMS]);
  return fn;
}

/** The keys a construct's secrets may be encrypted with, when a secret names none itself. */
export function defaultKeysOf(props: { readonly encryptionKey?: kms.IKey; readonly encryptionKeys?: kms.IKey[] }): kms.IKey[] {
  return [...(props.encryptionKey ? [props.encryptionKey] : []), ...(props.encryptionKeys ?? [])];
}

/**
 * Secrets (with their ARNs) grouped by the keys that may encrypt them: a secret's own
 * `encryptionKey`, else every one of `defaultKeys`. One KMS statement per group.
 */
export function secretsByKeys(
  secrets: secretsmanager.ISecret[],
  arns: string[],
  defaultKeys: kms.IKey[],
): Array<{ keys: kms.IKey[]; arns: string[] }> {
  const groups = new Map<string, { keys: kms.IKey[]; arns: string[] }>();
  secrets.forEach((secret, i) => {
    const keys = secret.encryptionKey ? [secret.encryptionKey] : defaultKeys;
    if (keys.length === 0) {
      return;
    }
    const id = keys.map((key) => key.node.path).join(',');
    const group = groups.get(id) ?? { keys, arns: [] };
    group.arns.push(arns[i]);
    groups.set(id, group);
  });
  return [...groups.values()];
}
