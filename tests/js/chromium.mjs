// Headless Chromium for the browser tests (playwright-core, Debian's chromium), with
// fake media devices. `media`: real WebRTC between pages or to a relay on loopback
// (loopback candidates allowed, audio plays without a gesture); otherwise no ICE
// candidates at all (signalling is what is tested). `audioFile`: what the fake
// microphone plays (implies `media`).
import { chromium } from "playwright-core";

export function launchChromium({
  executablePath = "/usr/bin/chromium",
  media = false,
  audioFile,
  ignoreCertificateErrors = false,
} = {}) {
  const withMedia = media || Boolean(audioFile);
  return chromium.launch({
    executablePath,
    headless: true,
    args: [
      "--no-sandbox",
      "--use-fake-ui-for-media-stream",
      "--use-fake-device-for-media-stream",
      ...(audioFile ? [`--use-file-for-fake-audio-capture=${audioFile}`] : []),
      ...(withMedia
        ? ["--allow-loopback-in-peer-connection", "--autoplay-policy=no-user-gesture-required"]
        : ["--force-webrtc-ip-handling-policy=disable_non_proxied_udp"]),
      "--disable-gpu",
      // A wss:// test server has a self-signed certificate.
      ...(ignoreCertificateErrors ? ["--ignore-certificate-errors"] : []),
    ],
  });
}
