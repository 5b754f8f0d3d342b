/**
 * The demo page's script (bundled with the SDK by server.ts). Every card is a
 * simulated player: one StreamLease, one WebSocket, one slot of the user's limit.
 */
import { listStreams, StreamLease, StreamLimitError, type ActiveStream, type LeaseState } from '../client/index.js';

interface Device {
  readonly lease: StreamLease;
  readonly user: string;
  readonly name: string;
  readonly card: HTMLElement;
  message: string;
}

/** Device kinds: id prefix, label, and the class a "1 TV + 2 mobile" plan counts them in. */
const KINDS = [
  ['tv', 'Living-room TV', 'tv'],
  ['phone', 'Phone', 'mobile'],
  ['laptop', 'Laptop', undefined],
  ['tablet', 'Tablet', 'mobile'],
  ['console', 'Game console', undefined],
  ['kitchen', 'Kitchen TV', 'tv'],
] as const;
/** The one live event every device watches under the "one device per event" plan. */
const EVENT = 'cup-final-live';
const CONTENT = ['match-day-live', 'the-long-night-s1e4', 'ocean-docs', 'cup-final-replay', 'cooking-42'];
const STATE_LABEL: Record<LeaseState, string> = {
  idle: 'Idle',
  connecting: 'Connecting',
  granted: 'Playing',
  released: 'Paused (slot given back)',
  reconnecting: 'Reconnecting',
  denied: 'Limit reached',
  revoked: 'Stopped remotely',
  replaced: 'Replaced',
  ended: 'Ended',
  stopped: 'Stopped',
};

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;
const gateway = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}`;
const devices = new Map<string, Device>();
let opened = 0;

/** Demo tokens come from the development-only token route; a real player gets them from its login (with its plan). */
async function tokenFor(user: string, plan = currentPlan()): Promise<string> {
  const res = await fetch(`/demo/token?user=${encodeURIComponent(user)}&plan=${encodeURIComponent(plan)}`, { method: 'POST' });
  if (!res.ok) throw new Error(`token route answered ${res.status}: start the gateway without JWT_SECRET for the demo`);
  return ((await res.json()) as { token: string }).token;
}

const currentUser = (): string => $<HTMLSelectElement>('user').value;
const currentPlan = (): string => $<HTMLSelectElement>('plan').value;

function nameOf(deviceId: string): string {
  return devices.get(deviceId)?.name ?? deviceId;
}

function render(device: Device): void {
  const { card, lease } = device;
  const state = lease.state;
  card.dataset.state = state;
  card.hidden = device.user !== currentUser();
  card.querySelector('.badge')!.textContent = STATE_LABEL[state];
  card.querySelector('.message')!.textContent = device.message;
  const live = state === 'granted' || state === 'connecting' || state === 'reconnecting';
  const stop = card.querySelector<HTMLButtonElement>('button.stop')!;
  stop.textContent = live ? 'Stop playback' : 'Remove';
  stop.classList.toggle('danger', live);
}

function openDevice(): void {
  const user = currentUser();
  const plan = currentPlan();
  const [kind, label, deviceClass] = KINDS[opened % KINDS.length];
  opened++;
  const deviceId = `${kind}-${Math.random().toString(36).slice(2, 6)}`;
  const contentId = plan === 'event' ? EVENT : CONTENT[opened % CONTENT.length];
  const lease = new StreamLease({
    url: gateway,
    getToken: () => tokenFor(user, plan),
    deviceId,
    contentId,
    deviceClass: plan === 'tv-mobile' ? deviceClass : undefined,
  });

  const card = document.createElement('article');
  card.className = 'card';
  card.dataset.device = deviceId;
  card.innerHTML =
    '<span class="badge"></span><h3></h3><span class="meta"></span><p class="message"></p><div class="actions"><button type="button" class="stop"></button></div>';
  card.querySelector('h3')!.textContent = `${label} ${opened}`;
  card.querySelector('.meta')!.textContent = `${deviceId} · ${contentId}${plan === 'tv-mobile' && deviceClass ? ` · ${deviceClass}` : ''}`;
  const device: Device = { lease, user, name: `${label} ${opened}`, card, message: 'Asking the gateway for a stream slot…' };
  devices.set(deviceId, device);
  $('devices').append(card);

  card.querySelector('button.stop')!.addEventListener('click', () => {
    if (lease.state === 'granted' || lease.state === 'connecting' || lease.state === 'reconnecting') {
      lease.stop();
      device.message = 'Playback stopped.';
      render(device);
    } else {
      devices.delete(deviceId);
      card.remove();
    }
    void refreshCounter();
  });
  lease.on('state', () => render(device));
  lease.on('granted', (g) => {
    device.message = `Playing. ${g.active} of ${g.limit} streams in use.`;
    render(device);
    void refreshCounter();
  });
  for (const type of ['lost', 'revoked', 'replaced', 'reconnecting', 'released'] as const) {
    lease.on(type, (e) => {
      device.message = e.viewerMessage;
      render(device);
      void refreshCounter();
    });
  }
  render(device);
  lease.start().catch((err: unknown) => {
    if (err instanceof StreamLimitError) {
      device.message = err.viewerMessage;
      render(device);
      showDenied(device, err.limit, err.active);
    } else if (!(err instanceof Error && (err as { code?: string }).code === 'ERR_STOPPED')) {
      device.message = err instanceof Error && 'viewerMessage' in err ? String(err.viewerMessage) : String(err);
      render(device);
    }
  });
}

/** At the limit: who is playing, and a button to stop one of them and play here instead. */
function showDenied(device: Device, limit: number, active: readonly ActiveStream[]): void {
  const dialog = $<HTMLDialogElement>('denied');
  $('denied-message').textContent = `${device.name} cannot play: ${device.message}`;
  const list = $('denied-list');
  list.replaceChildren(
    ...active.map((a) => {
      const li = document.createElement('li');
      li.dataset.device = a.deviceId;
      const who = document.createElement('span');
      who.className = 'who';
      who.innerHTML = '<strong></strong><small></small>';
      who.querySelector('strong')!.textContent = nameOf(a.deviceId);
      who.querySelector('small')!.textContent =
        `${a.contentId ?? 'unknown title'}${a.class ? ` · ${a.class}` : ''} · since ${new Date(a.since).toLocaleTimeString()}`;
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'primary takeover';
      button.textContent = 'Stop it and watch here';
      button.addEventListener('click', () => {
        dialog.close();
        device.message = `Stopping ${nameOf(a.deviceId)}…`;
        render(device);
        device.lease.takeover(a.deviceId).catch((err: unknown) => {
          device.message = err instanceof Error && 'viewerMessage' in err ? String(err.viewerMessage) : String(err);
          render(device);
        });
      });
      li.append(who, button);
      return li;
    }),
  );
  dialog.dataset.limit = String(limit);
  if (!dialog.open) dialog.showModal();
}

/** The live counter: the gateway's own list of the user's streams (every device, any tab). */
async function refreshCounter(): Promise<void> {
  const user = currentUser();
  try {
    const list = await listStreams(gateway, await tokenFor(user));
    if (user !== currentUser()) return;
    $('count').textContent = String(list.streams.length);
    $('limit').textContent = String(list.limit);
    $('count').parentElement!.parentElement!.classList.toggle('full', list.streams.length >= list.limit);
    $('notice').textContent = '';
  } catch (err) {
    $('notice').textContent = String((err as Error).message ?? err);
  }
}

$('start').addEventListener('click', openDevice);
$('user').addEventListener('change', () => {
  $('counter-user').textContent = currentUser();
  devices.forEach(render);
  void refreshCounter();
});
void refreshCounter();
setInterval(() => void refreshCounter(), 1000);
