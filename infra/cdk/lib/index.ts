//! keyturn's CDK constructs.

export * from './function';
export * from './rotation';
export * from './credentials-api';
export * from './alarms';
export * from './network';
