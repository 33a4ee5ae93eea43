/* A minimal streaming reader of PCM WAV files (host tool only). */
#ifndef WAV_READER_H_
#define WAV_READER_H_

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct {
  FILE* file;
  int sample_rate, channels, bits_per_sample;
  uint32_t data_left;        /* bytes of sample data not yet read */
  int error;                 /* set when the data ends early */
  char error_message[160];
} wav_reader;

/* 0 on success; otherwise a message naming the file and what is wrong. */
int wav_open(wav_reader* wav, const char* path, char* message, size_t message_len);

/* Up to n 16-bit samples; 0 at the end (or on error, then wav->error is set). */
size_t wav_read(wav_reader* wav, int16_t* samples, size_t n);

void wav_close(wav_reader* wav);

#endif /* WAV_READER_H_ */
