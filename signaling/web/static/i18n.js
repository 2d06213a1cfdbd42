// Texts of the page in English and German; the language follows the browser unless the
// user switches it. Nothing is remembered: a reload asks the browser again.
const texts = {
  en: {
    title: 'Video consultation', skip: 'Skip to the consultation', 'lang.hint': 'Switch the language',
    'lang.other': 'Deutsch', stage: 'Video', you: 'You', 'screen.remote': 'Shared screen',
    'camera.offself': 'Your camera is off', 'camera.offpeer': 'Camera off', autoplay: 'Tap to start sound and video',
    'prejoin.title': 'Before you join', 'media.retry': 'Try camera and microphone again',
    'camera.label': 'Camera', 'mic.label': 'Microphone', 'speaker.label': 'Speaker', 'mic.level': 'Microphone level',
    'name.label': 'Your name (optional, shown to the practitioner)',
    'test.title': 'Connection test', 'test.udp': 'UDP', 'test.tcp': 'TCP', 'test.tls': 'TLS (port 443)',
    'test.run': 'Test again', 'test.running': 'testing…', 'test.ok': 'works', 'test.fail': 'blocked',
    'test.absent': 'not offered by this server',
    'test.good': 'A relayed call will work from this network.',
    'test.tlsonly': 'A relayed call will work from this network, over TLS (port 443) only.',
    'test.bad': 'No relay could be reached from this network: the call may not connect. Try another network (for example mobile data).',
    'test.error': 'The connection test could not run: {msg}',
    'check.title': 'Connection check', 'check.skip': 'Skip to the results',
    'check.results': 'Can video consultations reach the server from this network?',
    'check.intro': 'For each way of reaching the server (UDP, TCP, and TLS on port 443), this browser asks the server for a relay address, as it would for a video consultation behind a firewall. No camera, microphone or personal data is used, and nothing is stored.',
    'check.col.transport': 'Transport', 'check.col.server': 'Server', 'check.col.result': 'Result', 'check.col.time': 'Time',
    'check.col.url': 'TURN URL', 'check.col.type': 'Type', 'check.col.relayproto': 'Relay protocol', 'check.col.address': 'Address',
    'check.again': 'Test again', 'check.running': 'testing…', 'check.ok': 'works: relay address {addr}',
    'check.fail': 'blocked: no relay address within {s} s',
    'check.good': 'Video consultations will work from this network (relayed over {list}).',
    'check.streamonly': 'Video consultations will work from this network, over {list} only. Allowing UDP to the server improves quality on weak connections.',
    'check.bad': 'The server cannot be reached from this network: video consultations will not connect. Ask your IT department to allow the addresses and ports in the report below.',
    'check.error': 'The check could not run: {msg}', 'check.notoken': 'This page needs the complete check link (with the part after #).',
    'check.nourls': 'The server offers no TURN address.',
    'check.report': 'For your IT department', 'check.report.hint': 'Copy this report into your request: it names every server address and port that was tried and what happened.',
    'check.report.head': 'Ferry connection check, {when}', 'check.report.ok': 'relay candidate after {ms} ms',
    'check.report.fail': 'no relay candidate (blocked)', 'check.report.err': 'error',
    'check.candidates': 'Candidates gathered', 'check.errors': 'Errors',
    'waiting.title': 'Waiting room', 'waiting.text': 'Please wait: the practitioner will let you in.',
    'ended.title': 'The consultation is over', rejoin: 'Join again',
    'host.title': 'Waiting room', 'host.empty': 'Nobody is waiting.', 'host.in': 'In the call',
    'host.noname': 'Patient without a name', admit: 'Admit', deny: 'Deny', 'return': 'Send back to waiting room',
    remove: 'Remove',
    'chat.title': 'Chat and files', 'chat.label': 'Message', 'chat.send': 'Send',
    'file.label': 'Send a file', 'file.limit': 'Files up to {size}. They go directly to the other side, never through the server.',
    'relay.only': 'Relay only (hides your IP address)', join: 'Join', mute: 'Mute', unmute: 'Unmute',
    'camera.off': 'Camera off', 'camera.on': 'Camera on', share: 'Share screen', 'share.stop': 'Stop sharing',
    hangup: 'Leave', endall: 'End for everyone',
    'role.host': 'You are joining as the practitioner.', 'role.guest': 'You are joining as the patient.',
    'role.hostnamed': 'You are joining as the practitioner ({name}).',
    'media.ok': 'Camera and microphone are ready.',
    'media.audio.denied': 'You blocked the microphone for this page. Allow it in the browser\'s site settings, then choose "Try again".',
    'media.audio.busy': 'The microphone is in use by another program (for example Teams or Zoom). Close it, then choose "Try again".',
    'media.audio.notfound': 'No microphone was found.',
    'media.audio.failed': 'The microphone could not be started.',
    'media.video.denied': 'You blocked the camera for this page. Allow it in the browser\'s site settings, then choose "Try again". You can join without it.',
    'media.video.busy': 'The camera is in use by another program (for example Teams or Zoom). Close it, then choose "Try again". You can join without it.',
    'media.video.notfound': 'No camera was found. You can join without one.',
    'media.video.failed': 'The camera could not be started. You can join without it.',
    'media.none': 'You can still join: you will see and hear the other side, and chat.',
    'media.insecure': 'This page was opened without HTTPS, so the browser allows no camera or microphone. Ask the clinic for a secure (https) link.',
    'state.connecting': 'Connecting…', 'state.connected': 'Connected', 'state.reconnecting': 'Reconnecting…',
    'state.waitpeer': 'Waiting for the other side…', 'state.failed': 'Connection lost. Trying again…',
    'path.direct': 'Direct connection', 'path.relay': 'Relayed through the server ({transport})',
    'path.relayremote': 'Relayed through the server (by the other side)',
    'banner.reconnecting': 'Reconnecting…', 'banner.offline': 'You are offline. Reconnecting when the network is back…',
    'ended.left': 'You left the consultation.', 'ended.ended': 'The practitioner ended the consultation.',
    'ended.denied': 'The practitioner did not let you in.', 'ended.expired': 'This link has expired.',
    'ended.notyet': 'The consultation has not started yet ({when}). Please come back then.',
    'ended.invalid': 'This link is not valid. Please ask the clinic for a new one.',
    'ended.used': 'This link has already been used.', 'ended.full': 'The consultation is full.',
    'ended.replaced': 'You opened this consultation in another window.',
    'ended.busy': 'The server is busy. Please try again in a moment.',
    'ended.notoken': 'This page needs the full link from the clinic (with the part after #).',
    'note.knock': '{name} is waiting to be admitted.', 'note.joined': '{name} joined.', 'note.left': '{name} left.',
    'note.returned': 'The practitioner sent you back to the waiting room.',
    'note.admitted': 'You have been let in.', 'note.hostleft': 'The other side has left. You can wait here.',
    'peer.host': 'Practitioner', 'peer.guest': 'Patient',
    'file.sending': 'Sending', 'file.receiving': 'Receiving', 'file.done': 'Sent', 'file.received': 'Received',
    'file.cancel': 'Cancel', 'file.cancelled': 'Cancelled', 'file.download': 'Download {name}',
    'file.failed': 'Transfer failed', 'file.nopeer': 'Nobody to send the file to yet.',
    'file.toolarge': '"{name}" ({size}) is larger than the limit of {limit} and was not sent.',
    'file.toolargepeer': 'The other side tried to send "{name}" ({size}), which is larger than the limit of {limit}.',
    'chat.me': 'You',
  },
  de: {
    title: 'Videosprechstunde', skip: 'Zur Sprechstunde springen', 'lang.hint': 'Sprache wechseln',
    'lang.other': 'English', stage: 'Video', you: 'Sie', 'screen.remote': 'Geteilter Bildschirm',
    'camera.offself': 'Ihre Kamera ist aus', 'camera.offpeer': 'Kamera aus', autoplay: 'Tippen, um Ton und Bild zu starten',
    'prejoin.title': 'Vor dem Beitreten', 'media.retry': 'Kamera und Mikrofon erneut versuchen',
    'camera.label': 'Kamera', 'mic.label': 'Mikrofon', 'speaker.label': 'Lautsprecher', 'mic.level': 'Mikrofonpegel',
    'name.label': 'Ihr Name (freiwillig, wird der Praxis angezeigt)',
    'test.title': 'Verbindungstest', 'test.udp': 'UDP', 'test.tcp': 'TCP', 'test.tls': 'TLS (Port 443)',
    'test.run': 'Erneut testen', 'test.running': 'wird getestet…', 'test.ok': 'funktioniert', 'test.fail': 'blockiert',
    'test.absent': 'von diesem Server nicht angeboten',
    'test.good': 'Ein Gespräch über den Server funktioniert aus diesem Netz.',
    'test.tlsonly': 'Ein Gespräch über den Server funktioniert aus diesem Netz, nur über TLS (Port 443).',
    'test.bad': 'Aus diesem Netz ist kein Server erreichbar: Das Gespräch kommt eventuell nicht zustande. Versuchen Sie ein anderes Netz (zum Beispiel mobile Daten).',
    'test.error': 'Der Verbindungstest konnte nicht laufen: {msg}',
    'check.title': 'Verbindungsprüfung', 'check.skip': 'Zu den Ergebnissen springen',
    'check.results': 'Erreichen Videosprechstunden den Server aus diesem Netz?',
    'check.intro': 'Für jeden Weg zum Server (UDP, TCP und TLS auf Port 443) fragt dieser Browser den Server nach einer Relay-Adresse, wie er es für eine Videosprechstunde hinter einer Firewall täte. Kamera, Mikrofon und persönliche Daten werden nicht benutzt, und nichts wird gespeichert.',
    'check.col.transport': 'Transport', 'check.col.server': 'Server', 'check.col.result': 'Ergebnis', 'check.col.time': 'Zeit',
    'check.col.url': 'TURN-URL', 'check.col.type': 'Typ', 'check.col.relayproto': 'Relay-Protokoll', 'check.col.address': 'Adresse',
    'check.again': 'Erneut prüfen', 'check.running': 'wird geprüft…', 'check.ok': 'funktioniert: Relay-Adresse {addr}',
    'check.fail': 'blockiert: keine Relay-Adresse innerhalb von {s} s',
    'check.good': 'Videosprechstunden funktionieren aus diesem Netz (vermittelt über {list}).',
    'check.streamonly': 'Videosprechstunden funktionieren aus diesem Netz, nur über {list}. UDP zum Server freizugeben verbessert die Qualität bei schwachen Verbindungen.',
    'check.bad': 'Der Server ist aus diesem Netz nicht erreichbar: Videosprechstunden kommen nicht zustande. Bitten Sie Ihre IT, die Adressen und Ports im Bericht unten freizugeben.',
    'check.error': 'Die Prüfung konnte nicht laufen: {msg}', 'check.notoken': 'Diese Seite braucht den vollständigen Prüf-Link (mit dem Teil nach #).',
    'check.nourls': 'Der Server bietet keine TURN-Adresse an.',
    'check.report': 'Für Ihre IT-Abteilung', 'check.report.hint': 'Kopieren Sie diesen Bericht in Ihre Anfrage: Er nennt jede geprüfte Serveradresse mit Port und was geschah.',
    'check.report.head': 'Ferry-Verbindungsprüfung, {when}', 'check.report.ok': 'Relay-Kandidat nach {ms} ms',
    'check.report.fail': 'kein Relay-Kandidat (blockiert)', 'check.report.err': 'Fehler',
    'check.candidates': 'Gesammelte Kandidaten', 'check.errors': 'Fehler',
    'waiting.title': 'Wartezimmer', 'waiting.text': 'Bitte warten Sie: Die Praxis lässt Sie gleich herein.',
    'ended.title': 'Die Sprechstunde ist beendet', rejoin: 'Erneut beitreten',
    'host.title': 'Wartezimmer', 'host.empty': 'Niemand wartet.', 'host.in': 'Im Gespräch',
    'host.noname': 'Patient ohne Namen', admit: 'Hereinlassen', deny: 'Ablehnen', 'return': 'Zurück ins Wartezimmer',
    remove: 'Entfernen',
    'chat.title': 'Chat und Dateien', 'chat.label': 'Nachricht', 'chat.send': 'Senden',
    'file.label': 'Datei senden', 'file.limit': 'Dateien bis {size}. Sie gehen direkt an die andere Seite, nie über den Server.',
    'relay.only': 'Nur über den Server (verbirgt Ihre IP-Adresse)', join: 'Beitreten', mute: 'Stumm', unmute: 'Ton an',
    'camera.off': 'Kamera aus', 'camera.on': 'Kamera an', share: 'Bildschirm teilen', 'share.stop': 'Teilen beenden',
    hangup: 'Verlassen', endall: 'Für alle beenden',
    'role.host': 'Sie treten als Praxis bei.', 'role.guest': 'Sie treten als Patientin oder Patient bei.',
    'role.hostnamed': 'Sie treten als Praxis bei ({name}).',
    'media.ok': 'Kamera und Mikrofon sind bereit.',
    'media.audio.denied': 'Sie haben das Mikrofon für diese Seite blockiert. Erlauben Sie es in den Website-Einstellungen des Browsers und wählen Sie dann „Erneut versuchen“.',
    'media.audio.busy': 'Das Mikrofon wird von einem anderen Programm benutzt (zum Beispiel Teams oder Zoom). Schließen Sie es und wählen Sie dann „Erneut versuchen“.',
    'media.audio.notfound': 'Es wurde kein Mikrofon gefunden.',
    'media.audio.failed': 'Das Mikrofon konnte nicht gestartet werden.',
    'media.video.denied': 'Sie haben die Kamera für diese Seite blockiert. Erlauben Sie sie in den Website-Einstellungen des Browsers und wählen Sie dann „Erneut versuchen“. Sie können auch ohne Kamera beitreten.',
    'media.video.busy': 'Die Kamera wird von einem anderen Programm benutzt (zum Beispiel Teams oder Zoom). Schließen Sie es und wählen Sie dann „Erneut versuchen“. Sie können auch ohne Kamera beitreten.',
    'media.video.notfound': 'Es wurde keine Kamera gefunden. Sie können auch ohne Kamera beitreten.',
    'media.video.failed': 'Die Kamera konnte nicht gestartet werden. Sie können auch ohne Kamera beitreten.',
    'media.none': 'Sie können trotzdem beitreten: Sie sehen und hören die andere Seite und können chatten.',
    'media.insecure': 'Diese Seite wurde ohne HTTPS geöffnet, daher erlaubt der Browser weder Kamera noch Mikrofon. Bitten Sie die Praxis um einen sicheren (https-)Link.',
    'state.connecting': 'Verbindung wird aufgebaut…', 'state.connected': 'Verbunden', 'state.reconnecting': 'Verbindung wird wiederhergestellt…',
    'state.waitpeer': 'Warten auf die andere Seite…', 'state.failed': 'Verbindung verloren. Neuer Versuch…',
    'path.direct': 'Direkte Verbindung', 'path.relay': 'Über den Server vermittelt ({transport})',
    'path.relayremote': 'Über den Server vermittelt (von der anderen Seite)',
    'banner.reconnecting': 'Verbindung wird wiederhergestellt…', 'banner.offline': 'Sie sind offline. Die Verbindung wird wiederhergestellt, sobald das Netz zurück ist…',
    'ended.left': 'Sie haben die Sprechstunde verlassen.', 'ended.ended': 'Die Praxis hat die Sprechstunde beendet.',
    'ended.denied': 'Die Praxis hat Sie nicht hereingelassen.', 'ended.expired': 'Dieser Link ist abgelaufen.',
    'ended.notyet': 'Die Sprechstunde hat noch nicht begonnen ({when}). Bitte kommen Sie dann wieder.',
    'ended.invalid': 'Dieser Link ist ungültig. Bitte fragen Sie die Praxis nach einem neuen.',
    'ended.used': 'Dieser Link wurde bereits benutzt.', 'ended.full': 'Die Sprechstunde ist voll.',
    'ended.replaced': 'Sie haben die Sprechstunde in einem anderen Fenster geöffnet.',
    'ended.busy': 'Der Server ist ausgelastet. Bitte versuchen Sie es gleich noch einmal.',
    'ended.notoken': 'Diese Seite braucht den vollständigen Link der Praxis (mit dem Teil nach #).',
    'note.knock': '{name} wartet auf Einlass.', 'note.joined': '{name} ist beigetreten.', 'note.left': '{name} hat das Gespräch verlassen.',
    'note.returned': 'Die Praxis hat Sie zurück ins Wartezimmer geschickt.',
    'note.admitted': 'Sie wurden hereingelassen.', 'note.hostleft': 'Die andere Seite hat das Gespräch verlassen. Sie können hier warten.',
    'peer.host': 'Praxis', 'peer.guest': 'Patient/in',
    'file.sending': 'Wird gesendet', 'file.receiving': 'Wird empfangen', 'file.done': 'Gesendet', 'file.received': 'Empfangen',
    'file.cancel': 'Abbrechen', 'file.cancelled': 'Abgebrochen', 'file.download': '{name} herunterladen',
    'file.failed': 'Übertragung fehlgeschlagen', 'file.nopeer': 'Noch niemand da, an den die Datei gehen kann.',
    'file.toolarge': '„{name}“ ({size}) ist größer als die Grenze von {limit} und wurde nicht gesendet.',
    'file.toolargepeer': 'Die andere Seite wollte „{name}“ ({size}) senden; das ist größer als die Grenze von {limit}.',
    'chat.me': 'Sie',
  },
};

// detect picks the first of the browser's languages that the page speaks (English otherwise).
function detect() {
  for (const l of navigator.languages || [navigator.language || 'en']) {
    if (/^de\b/i.test(l)) return 'de';
    if (/^en\b/i.test(l)) return 'en';
  }
  return 'en';
}

let lang = detect();

// t returns the text for key in the current language, with {name} placeholders filled in.
export function t(key, params = {}) {
  const s = texts[lang][key] ?? texts.en[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (_, k) => String(params[k] ?? ''));
}

export function currentLang() { return lang; }

export function setLang(l) { lang = texts[l] ? l : 'en'; }

// apply sets the text of every element with data-i18n under root.
export function apply(root = document) {
  document.documentElement.lang = lang;
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
}

// formatSize renders bytes for people in binary units, like the config's sizes
// (rooms.page.max_file_size 100MiB shows as "100 MiB"; German "1,5 MiB"): at most one
// decimal, and a value that rounds to 1024 moves up a unit (1048575 bytes: "1 MiB").
export function formatSize(n) {
  const bytes = lang === 'de' ? (n === 1 ? 'Byte' : 'Bytes') : (n === 1 ? 'byte' : 'bytes');
  const units = [bytes, 'KiB', 'MiB', 'GiB'];
  let i = 0;
  // Bytes show whole; a larger unit with one decimal shows 1023.95 and up as 1024.
  while (i < units.length - 1 && n >= (i === 0 ? 1024 : 1023.95)) { n /= 1024; i++; }
  return new Intl.NumberFormat(lang, { maximumFractionDigits: i === 0 ? 0 : 1 }).format(n) + ' ' + units[i];
}
