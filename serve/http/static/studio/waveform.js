// A variation's waveform on a <canvas>, drawn from the API's peaks document
// ({sample_rate, samples_per_peak, peaks: [[min, max], …]}), with the played part highlighted.

const PLAYED = "#f5a524";
const UNPLAYED = "#8d93b8";

export class Waveform {
  constructor(canvas, audio) {
    this.canvas = canvas;
    this.audio = audio;
    this.peaks = null;
    this.durationS = 0;
    this.frame = 0;
    const redraw = () => this.draw();
    audio.addEventListener("timeupdate", redraw);
    audio.addEventListener("seeked", redraw);
    audio.addEventListener("play", () => this.follow());
    canvas.addEventListener("click", (event) => this.seek(event));
    new ResizeObserver(redraw).observe(canvas);
  }

  setPeaks(document) {
    this.peaks = document.peaks;
    this.durationS = (document.peaks.length * document.samples_per_peak) / document.sample_rate;
    this.canvas.dataset.drawn = "true";
    this.draw();
  }

  follow() {
    cancelAnimationFrame(this.frame);
    const step = () => {
      this.draw();
      if (!this.audio.paused && !this.audio.ended) this.frame = requestAnimationFrame(step);
    };
    this.frame = requestAnimationFrame(step);
  }

  seek(event) {
    const duration = this.audio.duration || this.durationS;
    if (!duration || !Number.isFinite(duration)) return;
    const box = this.canvas.getBoundingClientRect();
    this.audio.currentTime = ((event.clientX - box.left) / box.width) * duration;
  }

  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    const context = canvas.getContext("2d");
    context.clearRect(0, 0, width, height);
    if (!this.peaks || this.peaks.length === 0) return;
    const duration = this.audio.duration && Number.isFinite(this.audio.duration)
      ? this.audio.duration
      : this.durationS;
    const playedX = duration ? (this.audio.currentTime / duration) * width : 0;
    const middle = height / 2;
    const bar = Math.max(1, Math.round(2 * ratio));
    const gap = Math.max(1, Math.round(ratio));
    const columns = Math.floor(width / (bar + gap));
    const perColumn = this.peaks.length / columns;
    for (let column = 0; column < columns; column++) {
      const from = Math.floor(column * perColumn);
      const to = Math.max(from + 1, Math.floor((column + 1) * perColumn));
      let low = 0;
      let high = 0;
      for (let k = from; k < to && k < this.peaks.length; k++) {
        low = Math.min(low, this.peaks[k][0]);
        high = Math.max(high, this.peaks[k][1]);
      }
      const x = column * (bar + gap);
      const top = middle - Math.max(high, 0.01) * middle * 0.95;
      const bottom = middle - Math.min(low, -0.01) * middle * 0.95;
      context.fillStyle = x < playedX ? PLAYED : UNPLAYED;
      context.fillRect(x, top, bar, Math.max(bar, bottom - top));
    }
  }
}
