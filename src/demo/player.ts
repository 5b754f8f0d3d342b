/**
 * The demo player (player.html, bundled with hls.js and the SDK by server.ts):
 * holds a stream lease and plays an HLS stream whose origin checks the
 * playback token on every request (nginx auth_request in front of it, as in
 * docs/media-path.md). When the lease ends the page stops the player; a
 * player that would not stop gets refused by the origin within the token's
 * lifetime anyway.
 *
 *   /demo/player.html?media=<manifest URL>&user=<id>&device=<id>[&content=<id>][&takeover=<device|oldest>][&plan=<demo plan>]
 */
import Hls from 'hls.js';
import { StreamLease, StreamLimitError } from '../client/index.js';
import { hlsPlaybackConfig } from '../client/adapters/hls.js';

const params = new URLSearchParams(location.search);
const media = params.get('media');
const user = params.get('user') ?? 'alice';
const takeover = params.get('takeover') ?? undefined;
/** The demo token route's plans (server.ts): `event` allows one device per content, which makes takeovers easy to show. */
const plan = params.get('plan') ?? 'block';
const $ = (id: string): HTMLElement => document.getElementById(id)!;
const video = $('video') as HTMLVideoElement;

function show(state: string, message = ''): void {
  document.body.dataset.state = state;
  $('state').textContent = state;
  $('message').textContent = message;
}

async function tokenFor(): Promise<string> {
  const res = await fetch(`/demo/token?${new URLSearchParams({ user, plan })}`, { method: 'POST' });
  if (!res.ok) throw new Error(`token route answered ${res.status}: start the gateway without JWT_SECRET for the demo`);
  return ((await res.json()) as { token: string }).token;
}

setInterval(() => ($('time').textContent = video.currentTime.toFixed(1)), 100);

async function main(): Promise<void> {
  if (!media) {
    show('no-media', 'Pass ?media=<URL of an HLS manifest behind auth_request> (docs/media-path.md).');
    return;
  }
  const lease = new StreamLease({
    url: `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}`,
    getToken: () => tokenFor(),
    deviceId: params.get('device') ?? undefined,
    contentId: params.get('content') ?? undefined,
  });
  show('connecting');
  try {
    await lease.start();
  } catch (err) {
    if (!(err instanceof StreamLimitError) || takeover === undefined) {
      show('refused', (err as { viewerMessage?: string }).viewerMessage ?? String(err));
      return;
    }
    await lease.takeover(takeover);
  }
  $('lease').textContent = lease.grant?.leaseId ?? '';
  // Small buffers: the demo stream is tiny, and the page shows the limit biting within a segment or two.
  const hls = new Hls({
    ...hlsPlaybackConfig(lease, { contentId: lease.contentId }),
    maxBufferLength: 1,
    maxMaxBufferLength: 1,
    backBufferLength: 0,
    enableWorker: false,
  });
  hls.on(Hls.Events.ERROR, (_event, data) => {
    if (data.fatal) show('media-refused', `the media path refused a request (${data.response?.code ?? data.details})`);
  });
  lease.on('lost', (e) => {
    // An honest player stops at once; the origin would refuse it within one token lifetime anyway.
    hls.stopLoad();
    video.pause();
    show('stopped', e.viewerMessage);
  });
  hls.loadSource(media);
  hls.attachMedia(video);
  video.play().catch(() => {});
  show('playing');
}

main().catch((err: unknown) => show('error', String(err)));
