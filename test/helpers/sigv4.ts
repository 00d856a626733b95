/**
 * An independent check of an S3 presigned URL (SigV4 query auth), by botocore: moto_server serves
 * presigned URLs without checking their signatures, and the method is part of what is signed
 * (a URL signed for GET is a 403 to a HEAD in S3). Needs python3 with botocore, which moto brings.
 */
import { python } from './process.ts';

const SCRIPT = `
import sys
from urllib.parse import urlsplit, parse_qsl, urlencode, quote
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

url, method, access, secret = sys.argv[1:5]
parts = urlsplit(url)
query = parse_qsl(parts.query, keep_blank_values=True)
params = dict(query)
scope = params['X-Amz-Credential'].split('/')
unsigned = urlencode([(k, v) for k, v in query if k != 'X-Amz-Signature'], quote_via=quote)
req = AWSRequest(method=method, url=parts._replace(query=unsigned).geturl(), headers={'host': parts.netloc})
req.context['timestamp'] = params['X-Amz-Date']
auth = S3SigV4QueryAuth(Credentials(access, secret), scope[3], scope[2], expires=int(params['X-Amz-Expires']))
string_to_sign = auth.string_to_sign(req, auth.canonical_request(req))
print('valid' if auth.signature(string_to_sign, req) == params['X-Amz-Signature'] else 'invalid')
`;

/** Whether S3 would take `url` for `method`: its signature recomputed by botocore for that method. */
export async function presignedFor(
  url: string,
  method: 'GET' | 'HEAD',
  credentials: { readonly accessKeyId: string; readonly secretAccessKey: string },
): Promise<boolean> {
  const r = await python(SCRIPT, [url, method, credentials.accessKeyId, credentials.secretAccessKey]);
  if (r.code !== 0) throw new Error(`botocore signature check failed to run: ${r.stderr}`);
  return r.stdout.trim() === 'valid';
}
