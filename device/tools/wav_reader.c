#include "wav_reader.h"

#include <string.h>

static uint32_t le32(const unsigned char* p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint16_t le16(const unsigned char* p) { return (uint16_t)(p[0] | p[1] << 8); }

static int fail(wav_reader* wav, char* message, size_t len, const char* path, const char* what) {
  snprintf(message, len, "%s: %s", path, what);
  if (wav->file != NULL) fclose(wav->file);
  wav->file = NULL;
  return 1;
}

int wav_open(wav_reader* wav, const char* path, char* message, size_t message_len) {
  unsigned char header[12], chunk[8], fmt[40];
  memset(wav, 0, sizeof *wav);
  wav->file = fopen(path, "rb");
  if (wav->file == NULL) return fail(wav, message, message_len, path, "cannot open (missing?)");
  if (fread(header, 1, 12, wav->file) != 12 || memcmp(header, "RIFF", 4) != 0 ||
      memcmp(header + 8, "WAVE", 4) != 0)
    return fail(wav, message, message_len, path, "not a WAV file (no RIFF/WAVE header)");
  int have_fmt = 0;
  for (;;) {
    if (fread(chunk, 1, 8, wav->file) != 8)
      return fail(wav, message, message_len, path, "no data chunk: not a complete WAV file");
    const uint32_t size = le32(chunk + 4);
    if (memcmp(chunk, "fmt ", 4) == 0) {
      if (size < 16 || size > sizeof fmt || fread(fmt, 1, size, wav->file) != size)
        return fail(wav, message, message_len, path, "bad fmt chunk");
      const uint16_t format = le16(fmt);
      const int extensible_pcm = format == 0xFFFE && size >= 26 && le16(fmt + 24) == 1;
      if (format != 1 && !extensible_pcm)
        return fail(wav, message, message_len, path,
                    "not integer PCM (float or compressed WAV); save it as 16-bit PCM");
      wav->channels = le16(fmt + 2);
      wav->sample_rate = (int)le32(fmt + 4);
      wav->bits_per_sample = le16(fmt + 14);
      have_fmt = 1;
      if (size % 2) fseek(wav->file, 1, SEEK_CUR);
    } else if (memcmp(chunk, "data", 4) == 0) {
      if (!have_fmt) return fail(wav, message, message_len, path, "data before the fmt chunk");
      wav->data_left = size;
      return 0;
    } else if (fseek(wav->file, (long)size + (size % 2), SEEK_CUR) != 0) {
      return fail(wav, message, message_len, path, "truncated chunk");
    }
  }
}

size_t wav_read(wav_reader* wav, int16_t* samples, size_t n) {
  unsigned char bytes[2 * 1024];
  if (n > 1024) n = 1024;
  size_t want = n * 2 < wav->data_left ? n * 2 : wav->data_left & ~(uint32_t)1;
  if (want == 0 || wav->file == NULL) return 0;
  const size_t got = fread(bytes, 1, want, wav->file);
  if (got < want) {
    wav->error = 1;
    snprintf(wav->error_message, sizeof wav->error_message,
             "the file ends %u bytes before its data chunk says", (unsigned)(wav->data_left - got));
  }
  wav->data_left -= (uint32_t)got;
  for (size_t i = 0; i < got / 2; ++i) samples[i] = (int16_t)le16(bytes + 2 * i);
  return got / 2;
}

void wav_close(wav_reader* wav) {
  if (wav->file != NULL) fclose(wav->file);
  wav->file = NULL;
}
